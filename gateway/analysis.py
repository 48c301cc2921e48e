"""One analysis: store the uploads, extract frames, write the story, translate it.

Every object the request stores is deleted when it ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.object_store import ObjectStore

from contracts import blobs, rpc
from contracts.messages import (
    ExtractFrames,
    Frame,
    MediaKind,
    Progress,
    Stage,
    StoryWritten,
    Translate,
    Translated,
    VideoInfo,
    WriteStory,
)
from contracts.subjects import EXTRACT_FRAMES, TRANSLATE, WRITE_STORY, progress_subject
from gateway.config import Settings
from gateway.schemas import AnalyzeResponse, Models, StageUsage, Timings, TokenUsage
from gateway.uploads import ReceivedForm

log = logging.getLogger(__name__)

ProgressSink = Callable[[Progress], None]
_progress_decoder = msgspec.msgpack.Decoder(Progress)

_STAGE_DETAIL = {
    Stage.UPLOADING: "Storing your files",
    Stage.EXTRACTING_FRAMES: "Reading the pictures",
    Stage.WRITING_STORY: "Writing the story",
    Stage.TRANSLATING: "Translating into Thai",
}


@dataclass
class _Stored:
    """What one request has put in the blob store so far, for clean-up."""

    uploads: list[str]
    frames: list[str]


class Analyzer:
    """Runs the pipeline over NATS for one upload at a time (many concurrently)."""

    def __init__(self, nc: Client, store: ObjectStore, settings: Settings) -> None:
        self.nc = nc
        self.store = store
        self.settings = settings

    async def analyze(
        self, form: ReceivedForm, on_progress: ProgressSink | None = None
    ) -> AnalyzeResponse:
        """Run the whole pipeline; raises rpc.RemoteFailure or rpc.CallError on failure.

        ``on_progress`` (if given) hears each stage and the story text as it is written,
        from the gateway and from the services.
        """
        request_id = uuid.uuid4().hex
        stored = _Stored(uploads=[], frames=[])
        news = _News(request_id, on_progress)
        subscription = None
        if on_progress is not None:
            subscription = await self.nc.subscribe(news.subject, cb=news.relay)  # type: ignore[arg-type]
        clock = [time.perf_counter()]
        try:
            frames, video = await self._frames(request_id, form, stored, news)
            clock.append(time.perf_counter())
            news.stage(Stage.WRITING_STORY)
            story = await self._story(request_id, frames, form.prompt, video, news.subject)
            clock.append(time.perf_counter())
            news.stage(Stage.TRANSLATING)
            thai = await self._translate(request_id, story.text)
            clock.append(time.perf_counter())
        finally:
            if subscription is not None:
                await subscription.unsubscribe()
            await blobs.delete_quietly(self.store, stored.uploads + stored.frames)
        log.info("request %s: %d frame(s), story %s, translation %s",
                 request_id, len(frames), story.usage, thai.usage)  # fmt: skip
        return AnalyzeResponse(
            english=story.text,
            thai=thai.text,
            token_usage=TokenUsage.of(story.usage + thai.usage),
            usage_by_stage=StageUsage(
                story=TokenUsage.of(story.usage), translation=TokenUsage.of(thai.usage)
            ),
            models=Models(story=story.model, translation=thai.model),
            media=form.kind.value,
            frames_used=len(frames),
            request_id=request_id,
            timings_ms=Timings(
                frames=_ms(clock[1] - clock[0]),
                story=_ms(clock[2] - clock[1]),
                translation=_ms(clock[3] - clock[2]),
                total=_ms(clock[3] - clock[0]),
            ),
        )

    async def _frames(
        self, request_id: str, form: ReceivedForm, stored: _Stored, news: _News
    ) -> tuple[list[Frame], VideoInfo | None]:
        news.stage(Stage.UPLOADING)
        for index, received in enumerate(form.files):
            name = blobs.upload_name(request_id, index)
            stored.uploads.append(name)
            await blobs.put_file(self.store, name, received.path)
            # The bytes are in the bucket now; the temp file has done its job.
            received.path.unlink(missing_ok=True)
        max_frames = self.settings.max_frames if form.kind is MediaKind.VIDEO else 1
        news.stage(Stage.EXTRACTING_FRAMES)
        requests = [
            ExtractFrames(
                request_id=request_id,
                upload=name,
                kind=form.kind,
                max_frames=max_frames,
                progress=news.subject,
            )
            for name in stored.uploads
        ]
        replies = await asyncio.gather(
            *(
                rpc.call(self.nc, EXTRACT_FRAMES, r, timeout=self.settings.frames_timeout)
                for r in requests
            ),
            return_exceptions=True,
        )
        frames: list[Frame] = []
        video: VideoInfo | None = None
        problem: BaseException | None = None
        for upload, reply in zip(stored.uploads, replies, strict=True):
            if isinstance(reply, BaseException):
                problem = problem or reply
                # A late or failed extraction may still have written frames: sweep their names.
                stored.frames.extend(blobs.frame_name(upload, i) for i in range(max_frames))
                continue
            frames.extend(reply.frames)
            stored.frames.extend(f.object for f in reply.frames)
            video = reply.video or video
        if problem is not None:
            raise problem
        return frames, video

    async def _story(
        self,
        request_id: str,
        frames: list[Frame],
        prompt: str | None,
        video: VideoInfo | None,
        progress: str | None,
    ) -> StoryWritten:
        request = WriteStory(
            request_id=request_id, frames=frames, prompt=prompt, video=video, progress=progress
        )
        return await rpc.call(self.nc, WRITE_STORY, request, timeout=self.settings.story_timeout)

    async def _translate(self, request_id: str, english: str) -> Translated:
        request = Translate(request_id=request_id, text=english)
        return await rpc.call(
            self.nc, TRANSLATE, request, timeout=self.settings.translation_timeout
        )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class _News:
    """Passes one request's progress to its listener, if it has one."""

    def __init__(self, request_id: str, sink: ProgressSink | None) -> None:
        self.request_id = request_id
        self.sink = sink
        self.subject = progress_subject(request_id) if sink is not None else None

    def stage(self, stage: Stage) -> None:
        if self.sink is not None:
            self.sink(
                Progress(request_id=self.request_id, stage=stage, detail=_STAGE_DETAIL[stage])
            )

    async def relay(self, msg: Msg) -> None:
        # Subscribed only when there is a sink to relay to.
        assert self.sink is not None
        try:
            self.sink(_progress_decoder.decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("request %s: ignored a malformed progress message", self.request_id)
