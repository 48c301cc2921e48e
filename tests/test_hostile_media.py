"""Hostile and broken uploads: clean 4xx details, bounded work, cancellation, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.object_store import ObjectStore
from PIL import Image, ImageChops, ImageStat

from bus import blobs, connection, rpc
from contracts.messages import Cancel, ExtractFrames, FailureCode, FramesExtracted, MediaKind
from contracts.subjects import EXTRACT_FRAMES, cancel_subject
from devstack.faults import eventually
from frame_service import config, decoding
from frame_service.cancellation import Cancelled, CancelToken
from frame_service.frames import DecodeBudget, FrameBounds, MediaError, UnprocessableMedia
from frame_service.images import prepare_image, to_picture
from frame_service.service import FrameExtractor, start_service
from frame_service.video import DecodeStats, extract_video
from tests import media

ROOT = Path(__file__).resolve().parent.parent
BOUNDS = FrameBounds()
# What a client must never read in a detail: our paths, errno and library reprs.
LEAKS = ("/", "Errno", "<", "av.error", "PIL", "errno", "0x")


def quick_settings(work_dir: Path, **changes: Any) -> config.Settings:
    """Frame settings without perception or transcription (no models: quick to start)."""
    return replace(
        config.load({}),
        work_dir=str(work_dir),
        perception=False,
        ocr=False,
        transcribe=False,
        **changes,
    )


@asynccontextmanager
async def frame_service(
    url: str, work_dir: Path, **changes: Any
) -> AsyncIterator[tuple[Client, ObjectStore]]:
    """The frame service alone on its own connection, and a client with the blob bucket."""
    settings = replace(quick_settings(work_dir, **changes), nats_url=url)
    service_nc = await connection.connect(url, "test-frames")
    client = await connection.connect(url, "test-client")
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
    assert (width, height) == (540, 594)
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


# --- bounded video work ---------------------------------------------------------------

# Lifted so the hostile video decodes for as long as a test lets it (85 s to the end).
UNBOUNDED = DecodeBudget(seconds=600, frames=10_000_000)


@pytest.fixture(scope="module")
def four_k_still(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten minutes of 4K at 30 fps with one keyframe: 0.6 MB, 17,627 frames to decode."""
    return media.write_sparse_keyframe_video(tmp_path_factory.mktemp("hostile") / "still.mp4", 600)


def test_a_video_whose_frames_cost_too_much_is_refused_before_decoding(four_k_still: Path):
    stats = DecodeStats()
    started = time.monotonic()
    with pytest.raises(UnprocessableMedia, match="keyframes are too far apart"):
        extract_video(four_k_still, 8, BOUNDS, stats)
    assert stats.frames_decoded == 0
    # Decoded to its end it kept a core busy for 85 s.
    assert time.monotonic() - started < 10


def test_decoding_stops_when_the_time_budget_is_spent(four_k_still: Path):
    stats = DecodeStats()
    started = time.monotonic()
    with pytest.raises(UnprocessableMedia, match=r"more than the 0\.5 s allowed"):
        extract_video(four_k_still, 8, BOUNDS, stats, budget=replace(UNBOUNDED, seconds=0.5))
    assert 0 < stats.frames_decoded < 17_000
    assert time.monotonic() - started < 10


def test_without_an_index_the_frame_budget_holds_while_decoding(
    four_k_still: Path, monkeypatch: pytest.MonkeyPatch
):
    # As for a container whose index says nothing: the count is kept frame by frame.
    monkeypatch.setattr(decoding, "_planned_decodes", lambda stream, targets: None)
    stats = DecodeStats()
    with pytest.raises(UnprocessableMedia, match="more than 50 frames"):
        extract_video(four_k_still, 8, BOUNDS, stats, budget=replace(UNBOUNDED, frames=50))
    assert stats.frames_decoded == 51


def test_a_video_within_its_budget_is_sampled_as_before(tmp_path: Path):
    path = media.write_sparse_keyframe_video(tmp_path / "short.mp4", 10, size=(320, 180))
    stats = DecodeStats()
    _, pictures = extract_video(path, 8, BOUNDS, stats, budget=DecodeBudget(frames=300))
    # One keyframe: a single forward pass reaches every candidate.
    assert len(pictures) >= 1 and stats.seeks == 1
    assert stats.frames_decoded <= 300


# --- cancellation reaches the threads -------------------------------------------------


def test_a_cancelled_decode_stops_at_its_next_frame(four_k_still: Path):
    cancel = CancelToken()
    threading.Timer(0.5, cancel.cancel).start()
    stats = DecodeStats()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        extract_video(four_k_still, 8, BOUNDS, stats, budget=UNBOUNDED, cancel=cancel)
    assert time.monotonic() - started < 10
    assert 0 < stats.frames_decoded < 17_000


def test_a_cancelled_keyframe_sampling_stops_before_decoding(tmp_path: Path):
    # Keyframes once a second: the candidates are keyframes, each read and decoded alone.
    path = media.write_video(tmp_path / "minute.mp4", 60, fps=25, keyframe_interval=25)
    cancel = CancelToken()
    cancel.cancel()
    stats = DecodeStats()
    with pytest.raises(Cancelled):
        extract_video(path, 8, BOUNDS, stats, cancel=cancel)
    assert stats.keyframes_only
    assert stats.seeks == stats.frames_decoded == 0


def test_a_cancelled_photo_conversion_stops_between_strips(tmp_path: Path):
    path = media.write_transparent_palette_png(tmp_path / "poster.png", (6000, 6600))
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        prepare_image(path, BOUNDS, cancel)


async def test_cancelling_a_call_stops_its_worker_thread_and_removes_its_files(
    empty_nats_url: str, tmp_path: Path, four_k_still: Path
):
    work = tmp_path / "work"
    work.mkdir()
    nc = await connection.connect(empty_nats_url, "test-frames")
    try:
        store = await blobs.open_bucket(nc.jetstream())
        await blobs.put_file(store, "still/upload-0", four_k_still)
        extractor = FrameExtractor(nc, store, quick_settings(work, video_budget=UNBOUNDED))
        request = ExtractFrames(request_id="still", upload="still/upload-0", kind=MediaKind.VIDEO)
        call = asyncio.create_task(extractor.extract(request))
        await eventually(lambda: extractor.working == 1)
        await asyncio.sleep(0.5)  # well into the 85 s of decoding
        cancelled = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The call ends once its thread has stopped, not 85 s later.
        assert time.monotonic() - cancelled < 5
        assert extractor.working == 0
        assert list(work.iterdir()) == []
        await blobs.delete_quietly(store, ["still/upload-0"])
    finally:
        await nc.close()


async def test_a_passed_deadline_stops_the_decoding_and_removes_its_files(
    empty_nats_url: str, tmp_path: Path, four_k_still: Path
):
    async with frame_service(empty_nats_url, tmp_path, video_budget=UNBOUNDED) as (nc, store):
        await blobs.put_file(store, "late/upload-0", four_k_still)
        request = ExtractFrames(
            request_id="late",
            upload="late/upload-0",
            kind=MediaKind.VIDEO,
            deadline=time.time() + 1.5,
        )
        with pytest.raises(rpc.RemoteFailure, match="ran out of time"):
            await rpc.call(nc, EXTRACT_FRAMES, request, timeout=30)
        await eventually(lambda: list(tmp_path.glob("imgstory-frames-*")) == [], timeout=5)
        await blobs.delete_quietly(store, ["late/upload-0"])


# --- one hostile upload does not delay other users' photos ----------------------------


async def test_a_photo_is_answered_while_a_hostile_video_decodes(
    empty_nats_url: str, tmp_path: Path, four_k_still: Path
):
    one_each = {"photos_in_flight": 1, "videos_in_flight": 1, "video_budget": UNBOUNDED}
    async with frame_service(empty_nats_url, tmp_path, **one_each) as (nc, store):
        await blobs.put_file(store, "video/upload-0", four_k_still)
        await blobs.put_file(store, "photo/upload-0", media.sample_photo("chelsea.png"))
        hostile = asyncio.create_task(
            extract(nc, "video/upload-0", MediaKind.VIDEO, request_id="video")
        )
        await eventually(lambda: any(tmp_path.glob("imgstory-frames-*/upload")))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        photo = await extract(nc, "photo/upload-0", MediaKind.IMAGE, request_id="photo")
        # Queued behind the video, it would have waited for the 85 s of decoding.
        assert time.monotonic() - started < 10
        assert len(photo.frames) == 1
        await nc.publish(
            cancel_subject("video"), msgspec.msgpack.encode(Cancel(request_id="video"))
        )
        hostile.cancel()
        await asyncio.gather(hostile, return_exceptions=True)
        await eventually(lambda: list(tmp_path.glob("imgstory-frames-*")) == [], timeout=5)
        await blobs.delete_quietly(
            store, ["video/upload-0", "photo/upload-0", photo.frames[0].object]
        )


def test_photos_and_videos_at_once_follow_the_cores_unless_set():
    cores = len(os.sched_getaffinity(0))
    defaults = config.load({})
    assert (defaults.photos_in_flight, defaults.videos_in_flight) == (cores, max(1, cores // 2))
    chosen = config.load({"IMGSTORY_FRAMES_IN_FLIGHT": "3", "IMGSTORY_VIDEOS_IN_FLIGHT": "2"})
    assert (chosen.photos_in_flight, chosen.videos_in_flight) == (3, 2)


# --- nothing left behind ----------------------------------------------------------------


async def test_work_files_are_removed_after_success_and_after_failure(
    empty_nats_url: str, tmp_path: Path
):
    broken = media.write_garbage(tmp_path / "broken.png", prefix=b"\x89PNG\r\n\x1a\n")
    work = tmp_path / "work"
    work.mkdir()
    async with frame_service(empty_nats_url, work) as (nc, store):
        await blobs.put_file(store, "good/upload-0", media.sample_photo("coffee.png"))
        await blobs.put_file(store, "bad/upload-0", broken)
        done = await extract(nc, "good/upload-0", MediaKind.IMAGE)
        with pytest.raises(
            rpc.RemoteFailure, match="not a JPEG, PNG, HEIC, HEIF, AVIF, WebP or GIF image"
        ):
            await extract(nc, "bad/upload-0", MediaKind.IMAGE)
        assert list(work.iterdir()) == []
        await blobs.delete_quietly(
            store, ["good/upload-0", "bad/upload-0", *(f.object for f in done.frames)]
        )


async def test_a_starting_service_sweeps_work_dirs_an_earlier_crash_left(
    empty_nats_url: str, tmp_path: Path
):
    work = tmp_path / "work"
    an_hour_ago = time.time() - 3700
    crashed = work / "imgstory-frames-crashed"
    (crashed / "nested").mkdir(parents=True)
    (crashed / "upload").write_bytes(b"half a video")
    os.utime(crashed, (an_hour_ago, an_hour_ago))
    in_flight = work / "imgstory-frames-another-replicas"
    in_flight.mkdir()
    not_a_dir = work / "imgstory-frames-not-a-dir"
    not_a_dir.write_bytes(b"not ours to judge")
    os.utime(not_a_dir, (an_hour_ago, an_hour_ago))
    unrelated = work / "notes"
    unrelated.mkdir()
    os.utime(unrelated, (an_hour_ago, an_hour_ago))
    async with frame_service(empty_nats_url, work):
        pass
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [in_flight.name, not_a_dir.name, unrelated.name]
    )
