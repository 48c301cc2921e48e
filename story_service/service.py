"""The story endpoint: fetch the frames, ask the model for a story, reply with its usage."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js.errors import ObjectNotFoundError

from bus import blobs
from bus.blobs import BlobStore
from bus.reporter import Reporter
from bus.server import Server
from contracts.messages import FailureCode, Frame, Stage, StoryWritten, WriteStory
from contracts.subjects import INLINE_FRAMES, SEES_IMAGES, STORY, WRITE_STORY
from llm.chat import ChatModel
from llm.errors import ModelRejected, ModelUnavailable, RateLimited
from llm.provider import build_chat
from story_service.alt_text import describe, describe_video
from story_service.config import Settings
from story_service.paragraphs import ParagraphCutter
from story_service.steering import plan
from story_service.story import StoryFrame, VideoFacts, tidy_paragraphs, write_story

ERRORS = {
    RateLimited: FailureCode.RATE_LIMITED,
    ModelUnavailable: FailureCode.UPSTREAM_UNAVAILABLE,
    ModelRejected: FailureCode.UNPROCESSABLE,
    ObjectNotFoundError: FailureCode.INTERNAL,
    blobs.BlobsUnavailable: FailureCode.UPSTREAM_UNAVAILABLE,
}


class StoryWriter:
    def __init__(self, nc: Client, chat: ChatModel, store: BlobStore, settings: Settings) -> None:
        self.nc = nc
        self.chat = chat
        self.store = store
        self.settings = settings

    async def frames_of(self, request: WriteStory) -> list[StoryFrame]:
        """The request's frames fetched from the blob store, with their facts."""
        images = await asyncio.gather(*(self._jpeg(f) for f in request.frames))
        return [
            StoryFrame(jpeg=jpeg, timestamp=f.timestamp, facts=f.facts, taken_at=f.taken_at)
            for jpeg, f in zip(images, request.frames, strict=True)
        ]

    async def _jpeg(self, frame: Frame) -> bytes:
        """The frame's bytes: sent inline, or fetched from the bucket."""
        if frame.jpeg is not None:
            return frame.jpeg
        return await blobs.fetch_bytes(self.store, frame.object)

    async def write(self, request: WriteStory) -> StoryWritten:
        frames = await self.frames_of(request)
        video = None
        if request.video is not None:
            video = VideoFacts(
                duration=request.video.duration,
                has_audio=request.video.has_audio,
                transcript=request.video.transcript,
                transcript_language=request.video.transcript_language,
            )
        reporter = Reporter(self.nc, request.progress, request.request_id)
        # Streamed only when someone listens: not every compatible server reports usage
        # on streams. With paragraphs asked for, each finished one is published too.
        cutter = None
        if request.progress and request.paragraphs:
            cutter = ParagraphCutter(reporter.paragraph_from_thread, tidy_paragraphs)

        def hear(piece: str) -> None:
            if request.stream_text:
                reporter.text_from_thread(Stage.WRITING_STORY, piece)
            if cutter is not None:
                cutter.feed(piece)

        steering = plan(
            request.length,
            self.settings.words,
            self.settings.max_tokens,
            small=self.chat.profile.small,
        )
        story = await write_story(
            self.chat,
            frames,
            request.prompt,
            video,
            detail=self.settings.image_detail,
            max_tokens=steering.max_tokens,
            words=steering.words,
            temperature=self.settings.temperature,
            on_text=hear if request.progress else None,
            # A first answer that was garbage: its last paragraph, still in the cutter, is
            # not worth translating; the gateway translates what the final text adds.
            on_retry=cutter.discard if cutter is not None else None,
            deadline=request.deadline,
            by_capture=request.by_capture,
            words_asked=request.length is not None,
            cast=request.cast,
            alt_text=self.settings.alt_text,
        )
        if cutter is not None:
            cutter.close()
        return StoryWritten(
            text=story.text,
            usage=story.usage,
            model=story.model,
            saw_pictures=self.chat.profile.sees_images,
            warnings=list(steering.warnings),
            alt_text=story.alt_text or alt_texts(request),
        )


def alt_texts(request: WriteStory) -> list[str]:
    """Alt text from what perception measured in the pictures (a text-only model's scene
    facts): one sentence a photo in story order, or one for the video; [] without facts."""
    facts = [frame.facts for frame in request.frames]
    if not facts or any(f is None for f in facts):
        return []
    measured = [f for f in facts if f is not None]
    if request.video is not None:
        return [describe_video(measured, request.video.duration)]
    return [describe(f) for f in measured]


async def start_service(nc: Client, settings: Settings, chat: ChatModel | None = None) -> Server:
    """Start the story micro service on ``nc``; ``chat`` defaults to the configured model."""
    store = await blobs.open_bucket(blobs.jetstream(nc), settings.bucket)
    if chat is None:
        chat = await asyncio.to_thread(build_chat, settings.model)
    writer = StoryWriter(nc, chat, store, settings)
    # The gateway reads this to decide whether scene facts are worth measuring.
    capabilities = {
        SEES_IMAGES: "true" if chat.profile.sees_images else "false",
        INLINE_FRAMES: "true",
    }
    server = await Server.start(nc, STORY, metadata=capabilities)
    await server.add(WRITE_STORY, writer.write, errors=ERRORS, max_in_flight=settings.max_in_flight)
    return server
