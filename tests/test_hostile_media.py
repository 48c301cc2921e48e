"""Hostile and broken uploads: clean 4xx details, bounded work, cancellation, nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.object_store import ObjectStore
from PIL import Image, ImageChops, ImageStat

from contracts import blobs, rpc
from contracts.messages import ExtractFrames, FailureCode, FramesExtracted, MediaKind
from contracts.subjects import EXTRACT_FRAMES
from frame_service import config
from frame_service.frames import FrameBounds, MediaError, UnprocessableMedia
from frame_service.images import prepare_image, to_picture
from frame_service.service import start_service
from frame_service.video import extract_video
from tests import media

ROOT = Path(__file__).resolve().parent.parent
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


# --- bounded image work ---------------------------------------------------------------

# VmHWM, the peak resident size of this process image: unlike ru_maxrss it does not
# inherit the (much larger) test process's peak across fork and exec.
_PEAK_RSS = r"""
import re, sys
from pathlib import Path
from frame_service.frames import FrameBounds
from frame_service.images import prepare_image
picture = prepare_image(sys.argv[1], FrameBounds())
peak_kb = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(picture.width, picture.height, int(peak_kb) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_a_huge_transparent_palette_png_is_scaled_in_little_memory(tmp_path: Path):
    path = media.write_transparent_palette_png(tmp_path / "poster.png", (6000, 6600))
    assert path.stat().st_size < 100_000
    # A process of its own, so its peak resident size is this photo's alone.
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    width, height, peak_mb = map(int, done.stdout.split())
    assert (width, height) == (768, 845)
    # Converted whole it peaked at 660 MB; reduced a strip at a time, about 110 MB.
    assert peak_mb < 300


@pytest.mark.parametrize(
    ("mode", "short_side"), [("P", 200), ("I;16", 200), ("LA", 200), ("P", 768)]
)
def test_converting_a_strip_at_a_time_matches_converting_the_whole(
    tmp_path: Path, mode: str, short_side: int
):
    # 1601x1301 to a 200-pixel short side is reduced by 2 first (odd sizes: the last
    # row and column are partial); to 768 it is not reduced at all.
    bounds = replace(BOUNDS, short_side=short_side)
    detail = Image.open(media.sample_photo("astronaut.png")).convert("RGB").resize((1601, 1301))
    if mode == "P":
        img = detail.quantize(200)
        img.info["transparency"] = 5
    elif mode == "I;16":
        img = detail.convert("L").convert("I").point(lambda value: value * 257).convert("I;16")
    else:
        img = detail.convert("LA")
    path = tmp_path / "detail.png"
    img.save(path)
    size = bounds.fit_size(*img.size)
    # The whole picture flattened onto white at full size, then resized as an RGB photo.
    whole: Image.Image = Image.open(path)
    if mode == "I;16":
        whole = whole.convert("I").point(lambda value: value / 256).convert("L")
    flat = Image.alpha_composite(Image.new("RGBA", whole.size, "white"), whole.convert("RGBA"))
    expected = to_picture(flat.convert("RGB"), size, bounds.jpeg_quality)
    picture = prepare_image(path, bounds)
    assert (picture.width, picture.height) == size
    difference = ImageChops.difference(
        media.open_jpeg(picture.jpeg), media.open_jpeg(expected.jpeg)
    )
    assert max(high for _, high in ImageStat.Stat(difference).extrema) <= 2


def test_a_photo_over_the_memory_budget_is_refused_before_decoding(tmp_path: Path):
    # The header declares 4000x3000 RGB; its pixel data is a few zero bytes, so
    # decoding it would fail as truncated: the refusal must come first.
    path = media.write_bomb_png(tmp_path / "big.png", 4000, 3000)
    with pytest.raises(MediaError) as caught:
        prepare_image(path, replace(BOUNDS, max_decoded_mb=32))
    assert str(caught.value) == (
        "the image is 4000x3000 and would need about 46 MB of memory to decode, "
        "more than the 32 MB allowed"
    )
