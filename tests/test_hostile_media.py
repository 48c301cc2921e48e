"""Hostile and broken uploads: clean 4xx details, bounded work, cancellation, nothing left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.object_store import ObjectStore

from contracts import blobs, rpc
from contracts.messages import ExtractFrames, FailureCode, FramesExtracted, MediaKind
from contracts.subjects import EXTRACT_FRAMES
from frame_service import config
from frame_service.frames import FrameBounds, MediaError, UnprocessableMedia
from frame_service.images import prepare_image
from frame_service.service import start_service
from frame_service.video import extract_video
from tests import media

BOUNDS = FrameBounds()
# What a client must never read in a detail: our paths, errno and library reprs.
LEAKS = ("/", "Errno", "<", "av.error", "PIL", "errno", "0x")


@asynccontextmanager
async def frame_service(
    url: str, work_dir: Path, **changes: Any
) -> AsyncIterator[tuple[Client, ObjectStore]]:
    """The frame service alone on its own connection (no perception: quick), and a client."""
    settings = replace(
        config.load({}),
        nats_url=url,
        work_dir=str(work_dir),
        perception=False,
        ocr=False,
        transcribe=False,
        **changes,
    )
    service_nc = await rpc.connect(url, "test-frames")
    client = await rpc.connect(url, "test-client")
    server = await start_service(service_nc, settings)
    try:
        yield client, await blobs.open_bucket(client.jetstream())
    finally:
        await server.stop()
        await client.close()
        await service_nc.close()


async def extract(
    nc: Client, upload: str, kind: MediaKind, *, timeout: float = 30, request_id: str = "test"
) -> FramesExtracted:
    request = ExtractFrames(request_id=request_id, upload=upload, kind=kind)
    return await rpc.call(nc, EXTRACT_FRAMES, request, timeout=timeout)


# --- bad input is a clean 4xx ---------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda path: media.write_garbage(path, prefix=media.fake_mp4_header()),
        lambda path: media.write_truncated(media.sample_video("bikes.mp4"), path, 0.01),
        lambda path: media.write_audio_only_mp4(path),
        lambda path: media.write_undecodable_mp4(path),
    ],
    ids=["ftyp-then-noise", "truncated", "audio-only", "undecodable"],
)
def test_a_bad_video_is_refused_in_our_words(tmp_path: Path, write: Callable[[Path], Path]):
    path = write(tmp_path / "upload")
    with pytest.raises((MediaError, UnprocessableMedia)) as caught:
        extract_video(path, 8, BOUNDS)
    for leak in LEAKS:
        assert leak not in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "write",
    [
        lambda path: media.write_garbage(path, prefix=b"\x89PNG\r\n\x1a\n"),
        lambda path: media.write_truncated(media.sample_photo("astronaut.png"), path, 0.6),
        lambda path: media.write_truncated(media.sample_photo("rocket.jpg"), path, 0.3),
        lambda path: media.write_bomb_png(path, 100_000, 100_000),
    ],
    ids=["png-magic-then-noise", "truncated-png", "truncated-jpeg", "bomb"],
)
def test_a_bad_photo_is_refused_in_our_words(tmp_path: Path, write: Callable[[Path], Path]):
    path = write(tmp_path / "upload")
    with pytest.raises(MediaError) as caught:
        prepare_image(path, BOUNDS)
    for leak in LEAKS:
        assert leak not in str(caught.value), str(caught.value)


async def test_an_upload_missing_from_the_store_is_answered_in_our_words(
    empty_nats_url: str, tmp_path: Path
):
    async with frame_service(empty_nats_url, tmp_path) as (nc, _):
        with pytest.raises(rpc.RemoteFailure) as caught:
            await extract(nc, "nobody/stored-this", MediaKind.IMAGE)
    assert caught.value.failure.code is FailureCode.INTERNAL
    assert caught.value.failure.detail == "the upload is no longer stored; send it again"
