"""One analysis: extract frames from the uploads, write the story, translate it.

The uploads belong to the caller (a job); every object the analysis itself stores is
deleted when it ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.object_store import ObjectStore

from bus import blobs, rpc, tracing
from bus.channel import ProgressListener, RequestChannel
from bus.liveness import Liveness
from contracts.capture import capture_order
from contracts.messages import (
    Cancel,
    CastMember,
    ExtractFrames,
    Frame,
    JobUpload,
    Length,
    MediaKind,
    Stage,
    StoryWritten,
    Usage,
    VideoInfo,
    WriteStory,
)
from contracts.subjects import (
    EXTRACT_FRAMES,
    TRANSLATE,
    WRITE_STORY,
    Endpoint,
    Rep,
    Req,
    cancel_subject,
)
from gateway import request_ids
from gateway.capabilities import Capabilities
from gateway.cleanup import Janitor
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.schemas import (
    AltText,
    AnalyzeResponse,
    Models,
    StageUsage,
    Timings,
    TokenUsage,
    title_of,
)
from gateway.thai import StoryTranslation, translate_lines

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()

# Uploads up to this size travel inside the frames request (when NATS allows it).
INLINE_MAX_BYTES = 512 * 1024

_STAGE_DETAIL = {
    Stage.UPLOADING: "Storing your files",
    Stage.EXTRACTING_FRAMES: "Reading the pictures",
    Stage.WRITING_STORY: "Writing the story",
    Stage.TRANSLATING: "Translating into Thai",
}


@dataclass(frozen=True)
class Media:
    """What one analysis reads: the uploads, in order, and how the story is to be told.

    An upload is an object in the blob bucket (``stored``) or its bytes (``data``).
    """

    kind: MediaKind
    uploads: list[JobUpload]
    prompt: str | None = None
    length: Length | None = None
    cast: list[CastMember] = field(default_factory=list)
    request_id: str | None = None  # the id the answer carries; the current one if None
    # The key of this run's calls and stored objects (what a Cancel names); a new one
    # made from the request id if None.
    pipeline_key: str | None = None
    # Frames an earlier run of the same uploads kept (another take): no frame stage.
    frames: list[Frame] | None = None
    video: VideoInfo | None = None
    # Told the frames once the frame stage made them, which then keeps them (stored, not
    # inline, and not removed): their owner (a kept job) removes them.
    on_frames: Callable[[list[Frame], VideoInfo | None], None] | None = None


@dataclass
class _Stored:
    """What one analysis has put in the blob store so far, for clean-up."""

    uploads: list[str]
    frames: list[str]


class Analyzer:
    """Runs the pipeline over NATS for one upload at a time (many concurrently)."""

    def __init__(
        self,
        nc: Client,
        store: ObjectStore,
        janitor: Janitor,
        settings: Settings,
        capabilities: Capabilities | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.janitor = janitor
        self.settings = settings
        # One never refreshed knows of no replica: scene facts always, nothing inline,
        # the Thai in one call.
        self.capabilities = capabilities or Capabilities(nc)
        self.metrics = metrics or Metrics()  # a registry of its own when nobody reads it
        # How long the gateway waits for each stage, by endpoint subject.
        self._patience = {
            EXTRACT_FRAMES.subject: settings.frames_timeout,
            WRITE_STORY.subject: settings.story_timeout,
            TRANSLATE.subject: settings.translation_timeout,
        }

    async def analyze(
        self, media: Media, on_progress: ProgressListener | None = None
    ) -> AnalyzeResponse:
        """Run the whole pipeline; raises rpc.RemoteFailure or rpc.CallError on failure.

        ``on_progress`` (if given) hears each stage, the story text as it is written and
        the Thai as each paragraph is translated, from the gateway and from the services.
        However the analysis ends short of a result (a failure, or this coroutine
        cancelled because the client left), every service is told to drop the request
        and its stored objects are removed.
        """
        if not self.nc.is_connected:
            raise rpc.BusUnavailable()
        visible_id = media.request_id or request_ids.current()
        request_id = media.pipeline_key or request_ids.pipeline_key(visible_id)
        stored = _Stored(uploads=[], frames=[])
        channel = RequestChannel(self.nc, request_id)
        if on_progress is not None:
            channel.on_progress(on_progress)
        liveness = channel.liveness(
            window=self.settings.liveness_window, attempts=self.settings.attempts
        )
        by_paragraph = self.capabilities.translate_by_paragraph
        thai = StoryTranslation(
            lambda request: self._call(TRANSLATE, request, liveness),
            request_id,
            on_thai=lambda piece: channel.text(Stage.TRANSLATING, piece),
            on_start=lambda: _announce(channel, Stage.TRANSLATING),
            by_paragraph=by_paragraph,
            names=[member.name for member in media.cast],
        )
        if by_paragraph:
            channel.on_paragraph(thai.heard)
        clock = [time.perf_counter()]
        finished = False
        alt_call: asyncio.Future[tuple[list[str | None], Usage]] | None = None
        async with channel:
            try:
                if media.frames:
                    frames, video = list(media.frames), media.video
                else:
                    frames, video = await self._frames(request_id, media, stored, channel, liveness)
                    if media.on_frames is not None:
                        media.on_frames(frames, video)
                by_capture = False
                if video is None:  # photos, one frame each, in upload order
                    order = capture_order([frame.taken_at for frame in frames])
                    if order is not None:
                        frames, by_capture = [frames[i] for i in order], True
                clock.append(time.perf_counter())
                self.metrics.stage_ended("frames", clock[1] - clock[0])
                _announce(channel, Stage.WRITING_STORY)
                request = WriteStory(
                    request_id=request_id,
                    frames=frames,
                    prompt=media.prompt,
                    video=video,
                    # The story streams only for someone: a watcher, or paragraphs to
                    # translate (not every compatible server reports usage on streams).
                    progress=channel.news_subject(paragraphs=True),
                    paragraphs=by_paragraph,
                    stream_text=on_progress is not None,  # pieces only for someone watching
                    by_capture=by_capture,
                    length=media.length,
                    cast=media.cast,
                )
                story = await self._story(request, liveness, thai)
                clock.append(time.perf_counter())
                self.metrics.stage_ended("story", clock[2] - clock[1])
                self.metrics.tokens_used("story", story.model, story.usage)
                # The alt text is translated beside the story's last paragraphs.
                alt_call = asyncio.ensure_future(
                    translate_lines(
                        lambda request: self._call(TRANSLATE, request, liveness),
                        request_id,
                        story.alt_text,
                    )
                )
                thai_text, paragraphs = await thai.finish(story.text)
                alt_thai, alt_usage = await alt_call
                clock.append(time.perf_counter())
                self.metrics.stage_ended("translation", clock[3] - clock[2])
                self.metrics.stage_ended("total", clock[3] - clock[0])
                self.metrics.tokens_used("translation", thai.model, thai.usage + alt_usage)
                finished = True
            finally:
                await thai.close()
                if alt_call is not None and not alt_call.done():
                    alt_call.cancel()
                    await asyncio.gather(alt_call, return_exceptions=True)
                if not finished:
                    await self._abandon(request_id)
                self.janitor.remove(stored.uploads + stored.frames)
        log.info(
            "request %s: %d frame(s), story %s, translation of %d paragraph(s) %s",
            request_id,
            len(frames),
            story.usage,
            paragraphs,
            thai.usage,
        )
        warnings = story.warnings + thai.warnings
        for warning in warnings:
            log.warning("request %s: %s", request_id, warning)
        return AnalyzeResponse(
            english=story.text,
            thai=thai_text,
            token_usage=TokenUsage.of(story.usage + thai.usage + alt_usage),
            usage_by_stage=StageUsage(
                story=TokenUsage.of(story.usage),
                translation=TokenUsage.of(thai.usage + alt_usage),
            ),
            models=Models(
                story=story.model,
                translation=thai.model,
                story_saw_pictures=story.saw_pictures,
            ),
            # A lone animated GIF or WebP was told as the short video it is.
            media=media.kind.value if video is None else MediaKind.VIDEO.value,
            frames_used=len(frames),
            order=None if video is not None else ("captured" if by_capture else "uploaded"),
            request_id=visible_id,
            timings_ms=Timings(
                frames=_ms(clock[1] - clock[0]),
                story=_ms(clock[2] - clock[1]),
                translation=_ms(clock[3] - clock[2]),
                total=_ms(clock[3] - clock[0]),
            ),
            estimated_cost_usd=self._cost(story, thai.model, thai.usage + alt_usage),
            warnings=warnings,
            title=title_of(story.text, thai_text),
            alt_text=[
                AltText(english=english, thai=thai)
                for english, thai in zip(story.alt_text, alt_thai, strict=True)
            ],
        )

    def _cost(self, story: StoryWritten, thai_model: str, thai_usage: Usage) -> float | None:
        if self.settings.prices is None:
            return None
        cost = self.settings.prices.cost([(story.model, story.usage), (thai_model, thai_usage)])
        if cost is None:
            log.warning(
                "IMGSTORY_PRICES has no price for %s or %s: no cost estimate",
                story.model,
                thai_model,
            )
        return cost

    async def _story(
        self, request: WriteStory, liveness: Liveness, thai: StoryTranslation
    ) -> StoryWritten:
        """The story call; a paragraph's translation failing meanwhile fails it at once
        (the request cannot succeed, so the story stops too)."""
        call = asyncio.create_task(self._call(WRITE_STORY, request, liveness))
        try:
            either: set[asyncio.Future[Any]] = {call, thai.failed}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not call.done():
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
        if thai.failed.done() and not thai.failed.cancelled():
            thai.failed.result()
        return call.result()

    async def _frames(
        self,
        request_id: str,
        media: Media,
        stored: _Stored,
        channel: RequestChannel,
        liveness: Liveness,
    ) -> tuple[list[Frame], VideoInfo | None]:
        _announce(channel, Stage.UPLOADING)
        caps = self.capabilities
        # A small upload rides in the request: four trips to the bucket saved (store,
        # fetch, remove; 32 concurrent 256 kB put+get took 131 ms against 10 ms alone).
        inline_limit = self._inline_limit() if caps.inline_uploads else 0
        uploads: list[tuple[str, bytes | None]] = []
        for index, upload in enumerate(media.uploads):
            if upload.data is None:
                uploads.append((upload.name, None))  # in the bucket already, the caller's
            elif upload.size <= inline_limit:
                uploads.append((upload.name, upload.data))
            else:
                # Sent in bytes, but no replica takes them inline: stored for this analysis.
                name = blobs.upload_name(request_id, index)
                stored.uploads.append(name)
                await blobs.put_bytes(self.store, name, upload.data)
                uploads.append((name, None))
        # A lone photo may be an animation, which the frame service tells as a video.
        several = media.kind is MediaKind.VIDEO or len(uploads) == 1
        max_frames = self.settings.max_frames if several else 1
        # Frames come back inline while all of them fit the story request together.
        frames_budget = 0
        if caps.inline_frames and media.on_frames is None:
            frames_budget = self._inline_limit() // len(uploads)
        _announce(channel, Stage.EXTRACTING_FRAMES)
        requests = [
            ExtractFrames(
                request_id=request_id,
                upload=name,
                kind=media.kind,
                max_frames=max_frames,
                scene_facts=caps.scene_facts_needed,
                data=data,
                inline_frames_bytes=frames_budget,
                progress=channel.news_subject(),
            )
            for name, data in uploads
        ]
        calls = [asyncio.ensure_future(self._call(EXTRACT_FRAMES, r, liveness)) for r in requests]
        try:
            replies = await asyncio.gather(*calls)
        except BaseException:
            for pending in calls:
                pending.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            # An extraction that failed or was dropped may still have written frames.
            stored.frames.extend(
                blobs.frame_name(upload, i) for upload, _ in uploads for i in range(max_frames)
            )
            raise
        frames = [frame for reply in replies for frame in reply.frames]
        if media.on_frames is None:  # else kept, by whoever hears them
            stored.frames.extend(frame.object for frame in frames if frame.object)
        video = next((reply.video for reply in replies if reply.video is not None), None)
        return frames, video

    def _inline_limit(self) -> int:
        """The most bytes of media one request carries inside it: well within NATS's limit."""
        return min(INLINE_MAX_BYTES, self.nc.max_payload // 2)

    async def _call(self, endpoint: Endpoint[Req, Rep], request: Req, liveness: Liveness) -> Rep:
        """One stage call, within the gateway's patience for that stage."""
        timeout = self._patience[endpoint.subject]
        # A span per stage call ("frames", "story", "translation"); each send is one inside it.
        with tracing.span(endpoint.service.name.removeprefix("imgstory-")):
            return await rpc.call(self.nc, endpoint, request, timeout=timeout, liveness=liveness)

    async def _abandon(self, request_id: str) -> None:
        """Tell every replica to drop what it holds for ``request_id``."""
        cancel = Cancel(request_id=request_id, reason="the request ended without a result")
        with contextlib.suppress(NatsError):  # queued for the reconnect if the bus is down
            await self.nc.publish(cancel_subject(request_id), _encoder.encode(cancel))


def _announce(channel: RequestChannel, stage: Stage) -> None:
    """Tell the request's listener which stage the gateway has reached, in its words."""
    channel.stage(stage, _STAGE_DETAIL[stage])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
