"""The frames endpoint: fetch an upload from the blob store, decode it, store its frames."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from nats.aio.client import Client
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from contracts import blobs
from contracts.messages import (
    ExtractFrames,
    FailureCode,
    Frame,
    FramesExtracted,
    MediaKind,
    VideoInfo,
)
from contracts.rpc import Server
from contracts.subjects import EXTRACT_FRAMES, FRAMES
from frame_service.config import Settings
from frame_service.frames import MediaError, Picture, UnprocessableMedia, extract_video, prepare_image

log = logging.getLogger(__name__)

ERRORS = {
    MediaError: FailureCode.INVALID_MEDIA,
    UnprocessableMedia: FailureCode.UNPROCESSABLE,
    ObjectNotFoundError: FailureCode.INTERNAL,
}


class FrameExtractor:
    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def extract(self, request: ExtractFrames) -> FramesExtracted:
        video = None
        with tempfile.TemporaryDirectory(prefix="imgstory-frames-", dir=self.settings.work_dir) as tmp:
            path = Path(tmp) / "upload"
            await blobs.fetch_to_file(self.store, request.upload, path)
            if request.kind is MediaKind.VIDEO:
                meta, pictures = await asyncio.to_thread(
                    extract_video, path, request.max_frames, self.settings.bounds
                )
                video = VideoInfo(
                    duration=meta.duration,
                    width=meta.width,
                    height=meta.height,
                    fps=meta.fps,
                    has_audio=meta.has_audio,
                )
            else:
                pictures = [await asyncio.to_thread(prepare_image, path, self.settings.bounds)]
        frames = await self._store(request.upload, pictures)
        log.info("request %s: %s -> %d frame(s)", request.request_id, request.kind, len(frames))
        return FramesExtracted(frames=frames, video=video)

    async def _store(self, upload: str, pictures: list[Picture]) -> list[Frame]:
        frames: list[Frame] = []
        try:
            for index, picture in enumerate(pictures):
                name = blobs.frame_name(upload, index)
                await blobs.put_bytes(self.store, name, picture.jpeg)
                frames.append(
                    Frame(
                        object=name,
                        width=picture.width,
                        height=picture.height,
                        timestamp=picture.timestamp,
                    )
                )
        except BaseException:
            # Nobody will learn these names if we fail: remove what was written.
            await blobs.delete_quietly(self.store, [f.object for f in frames])
            raise
        return frames


async def start_service(nc: Client, settings: Settings) -> Server:
    """Start the frames micro service on ``nc``; the caller stops it."""
    store = await blobs.open_bucket(nc.jetstream(), settings.blob_ttl)
    extractor = FrameExtractor(store, settings)
    server = await Server.start(nc, FRAMES)
    await server.add(
        EXTRACT_FRAMES, extractor.extract, errors=ERRORS, max_in_flight=settings.max_in_flight
    )
    return server
