"""One analysis: store the uploads, extract frames, write the story, translate it.

Every object the request stores is deleted when it ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js.object_store import ObjectStore

from contracts import blobs, rpc
from contracts.messages import (
    ExtractFrames,
    Failure,
    Frame,
    FramesExtracted,
    MediaKind,
    StoryWritten,
    Translate,
    Translated,
    VideoInfo,
    WriteStory,
)
from contracts.subjects import EXTRACT_FRAMES, TRANSLATE, WRITE_STORY
from gateway.config import Settings
from gateway.schemas import AnalyzeResponse, Models, StageUsage, TokenUsage
from gateway.uploads import ReceivedForm

log = logging.getLogger(__name__)


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

    async def analyze(self, form: ReceivedForm) -> AnalyzeResponse:
        """Run the whole pipeline; raises rpc.RemoteFailure or rpc.CallError on failure."""
        request_id = uuid.uuid4().hex
        stored = _Stored(uploads=[], frames=[])
        try:
            frames, video = await self._frames(request_id, form, stored)
            story = await self._story(request_id, frames, form.prompt, video)
            thai = await self._translate(request_id, story.text)
        finally:
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
        )

    async def _frames(
        self, request_id: str, form: ReceivedForm, stored: _Stored
    ) -> tuple[list[Frame], VideoInfo | None]:
        for index, received in enumerate(form.files):
            name = blobs.upload_name(request_id, index)
            stored.uploads.append(name)
            await blobs.put_file(self.store, name, received.path)
            # The bytes are in the bucket now; the temp file has done its job.
            received.path.unlink(missing_ok=True)
        max_frames = self.settings.max_frames if form.kind is MediaKind.VIDEO else 1
        requests = [
            ExtractFrames(request_id=request_id, upload=name, kind=form.kind, max_frames=max_frames)
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
        for upload, reply in zip(stored.uploads, replies):
            match reply:
                case FramesExtracted():
                    frames.extend(reply.frames)
                    stored.frames.extend(f.object for f in reply.frames)
                    video = reply.video or video
                    continue
                case Failure():
                    problem = problem or rpc.RemoteFailure(reply)
                case BaseException():
                    problem = problem or reply
            # A late or failed extraction may still have written frames: sweep their names.
            stored.frames.extend(blobs.frame_name(upload, i) for i in range(max_frames))
        if problem is not None:
            raise problem
        return frames, video

    async def _story(
        self, request_id: str, frames: list[Frame], prompt: str | None, video: VideoInfo | None
    ) -> StoryWritten:
        request = WriteStory(request_id=request_id, frames=frames, prompt=prompt, video=video)
        reply = await rpc.call(self.nc, WRITE_STORY, request, timeout=self.settings.story_timeout)
        match reply:
            case StoryWritten():
                return reply
            case Failure():
                raise rpc.RemoteFailure(reply)

    async def _translate(self, request_id: str, english: str) -> Translated:
        request = Translate(request_id=request_id, text=english)
        reply = await rpc.call(
            self.nc, TRANSLATE, request, timeout=self.settings.translation_timeout
        )
        match reply:
            case Translated():
                return reply
            case Failure():
                raise rpc.RemoteFailure(reply)
