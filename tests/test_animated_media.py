"""Animated GIFs and WebPs: alone, a short video told from frames chosen as a video's are;
among photos, a photo (its first frame); too costly or damaged, a clear 400."""

from __future__ import annotations

import base64
import io
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bus import blobs, connection
from contracts.messages import ExtractFrames, MediaKind
from frame_service import config
from frame_service.animation import extract_animation, read_timeline
from frame_service.frames import VIDEO_FRAME_BOUNDS, DecodeBudget, MediaError
from frame_service.service import FrameExtractor
from gateway.uploads import sniff

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)
# Three scenes of a second each, ten frames a second, a moving square in each.
SCENES = [RED, GREEN, BLUE]
FORMATS = [("GIF", "gif"), ("WEBP", "webp")]


def scene_frames(size: tuple[int, int] = (160, 120), per_scene: int = 10) -> list[Image.Image]:
    frames = []
    for color in SCENES:
        for index in range(per_scene):
            frame = Image.new("RGB", size, color)
            left = 8 + 10 * index
            frame.paste((250, 250, 250), (left, 40, left + 20, 60))
            frames.append(frame)
    return frames


def write_animation(
    path: Path, image_format: str, frames: list[Image.Image], ms: int = 100
) -> Path:
    extra = {"lossless": True} if image_format == "WEBP" else {}
    frames[0].save(
        path,
        format=image_format,
        save_all=True,
        append_images=frames[1:],
        duration=ms,
        loop=0,
        **extra,
    )
    return path


def huge_gif(frames: int, size: tuple[int, int]) -> bytes:
    """A GIF whose every frame draws one pixel on a huge canvas: a few kB that decode to
    frames x width x height pixels (Pillow composes each frame on the whole canvas)."""
    width, height = size
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = (
        b"!\xf9\x04\x00\x04\x00\x00\x00"  # graphic control: 40 ms
        + b","
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # one pixel's LZW data
    )
    return screen + frame * frames + b";"


def mean_color(jpeg: bytes) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float)
    return pixels[:30].mean(axis=(0, 1))  # above the moving square


def nearest_scene(color: np.ndarray) -> tuple[int, int, int]:
    return min(SCENES, key=lambda scene: float(np.abs(color - np.array(scene)).sum()))


@pytest.mark.parametrize(("image_format", "ext"), FORMATS)
def test_an_animation_is_a_short_video_with_frames_from_each_scene(tmp_path, image_format, ext):
    path = write_animation(tmp_path / f"clip.{ext}", image_format, scene_frames())
    assert sniff(path.read_bytes()[:16]) is MediaKind.IMAGE  # the upload's kind: still a photo
    timeline = read_timeline(path)
    assert timeline is not None
    assert (timeline.width, timeline.height, len(timeline.shown)) == (160, 120, 30)
    meta, pictures = extract_animation(path, timeline, 8, VIDEO_FRAME_BOUNDS)
    assert meta.duration == pytest.approx(3.0)
    assert meta.fps == pytest.approx(10.0)
    assert not meta.has_audio
    assert 3 <= len(pictures) <= 8
    times = [picture.timestamp or 0.0 for picture in pictures]
    assert times == sorted(times) and all(0 <= t < 3 for t in times)
    seen = [nearest_scene(mean_color(picture.jpeg)) for picture in pictures]
    assert set(seen) == set(SCENES), seen  # every scene is told, in order
    assert seen == sorted(seen, key=SCENES.index)


def test_frames_are_chosen_by_time_on_screen_and_a_zero_delay_lasts_100_ms(tmp_path):
    frames = [Image.new("RGB", (64, 48), color) for color in SCENES]
    path = tmp_path / "slides.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[2000, 0, 1000])
    timeline = read_timeline(path)
    assert timeline is not None and timeline.shown == (2000, 100, 1000)
    _, pictures = extract_animation(path, timeline, 8, VIDEO_FRAME_BOUNDS)
    # Candidates at 0.5, 1.6 and 2.6 s of 3.1: the green frame flashes by unseen, as a
    # video's would.
    assert [picture.timestamp for picture in pictures] == [0.0, 2.1]


@pytest.mark.parametrize(("image_format", "ext"), [*FORMATS, ("PNG", "png"), ("JPEG", "jpg")])
def test_a_still_image_has_no_timeline(tmp_path, image_format, ext):
    path = tmp_path / f"still.{ext}"
    Image.new("RGB", (64, 48), RED).save(path, format=image_format)
    assert read_timeline(path) is None


def test_a_huge_animation_is_refused_before_decoding_naming_the_limit(tmp_path):
    path = tmp_path / "huge.gif"
    path.write_bytes(huge_gif(1000, (3840, 2160)))  # 8,295 megapixels to decode
    timeline = read_timeline(path)
    assert timeline is not None and (timeline.width, len(timeline.shown)) == (3840, 1000)
    started = time.monotonic()
    with pytest.raises(MediaError, match="more than the 9000 frames or 1000 megapixels"):
        extract_animation(path, timeline, 8, VIDEO_FRAME_BOUNDS)
    assert time.monotonic() - started < 1


def test_an_animation_within_its_budget_is_told(tmp_path):
    path = tmp_path / "big.gif"
    path.write_bytes(huge_gif(60, (1280, 720)))  # 56 megapixels to decode
    timeline = read_timeline(path)
    assert timeline is not None
    meta, pictures = extract_animation(path, timeline, 8, VIDEO_FRAME_BOUNDS)
    assert meta.duration == pytest.approx(2.4) and pictures
    with pytest.raises(MediaError, match="megapixels"):
        extract_animation(path, timeline, 8, VIDEO_FRAME_BOUNDS, budget=DecodeBudget(megapixels=50))


@pytest.mark.parametrize(("image_format", "ext"), FORMATS)
async def test_a_truncated_animation_is_refused_and_leaves_no_file(
    empty_nats_url, tmp_path, image_format, ext
):
    whole = write_animation(tmp_path / f"clip.{ext}", image_format, scene_frames()).read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    nc = await connection.connect(empty_nats_url, "test-frames")
    try:
        store = await blobs.open_bucket(nc.jetstream())
        settings = replace(
            config.load({}), work_dir=str(work), perception=False, ocr=False, transcribe=False
        )
        request = ExtractFrames(
            request_id="cut",
            upload="cut/upload-0",
            kind=MediaKind.IMAGE,
            max_frames=8,
            data=whole[: len(whole) * 2 // 3],
        )
        with pytest.raises(MediaError, match="corrupt or truncated"):
            await FrameExtractor(nc, store, settings).extract(request)
    finally:
        await nc.close()
    assert list(work.iterdir()) == []


def _seen(openai) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        for url in openai.requests[0].image_urls
    ]


@pytest.mark.usefixtures("blob_store")
@pytest.mark.parametrize(("image_format", "ext"), FORMATS)
async def test_one_animated_gif_or_webp_becomes_a_story_of_a_short_silent_video(
    gateway, openai, tmp_path, image_format, ext
):
    path = write_animation(tmp_path / f"party.{ext}", image_format, scene_frames())
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=[("files", (path.name, path.read_bytes(), f"image/{ext}"))]
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "video" and body["order"] is None
    assert 3 <= body["frames_used"] <= 8
    prompt = openai.requests[0].text
    assert "from one video lasting 0:03" in prompt and "The video has no sound." in prompt
    assert len(_seen(openai)) == body["frames_used"]


@pytest.mark.usefixtures("blob_store")
async def test_a_single_frame_gif_alone_is_still_a_photo(gateway, openai, tmp_path):
    path = tmp_path / "still.gif"
    Image.new("RGB", (160, 120), GREEN).save(path)
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=[("files", (path.name, path.read_bytes(), "image/gif"))]
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["media"], body["frames_used"], body["order"]) == ("image", 1, "uploaded")
    assert "Here is 1 photo." in openai.requests[0].text


@pytest.mark.usefixtures("blob_store")
async def test_an_animated_gif_among_photos_is_one_photo_its_first_frame(gateway, openai, tmp_path):
    gif = write_animation(tmp_path / "clip.gif", "GIF", scene_frames())
    photo = tmp_path / "photo.png"
    Image.new("RGB", (160, 120), BLUE).save(photo)
    files = [
        ("files", (gif.name, gif.read_bytes(), "image/gif")),
        ("files", (photo.name, photo.read_bytes(), "image/png")),
    ]
    async with gateway() as client:
        response = await client.post("/analyze/", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["media"], body["frames_used"]) == ("image", 2)
    first, second = (np.asarray(img, dtype=float)[:30].mean(axis=(0, 1)) for img in _seen(openai))
    assert nearest_scene(first) == RED and nearest_scene(second) == BLUE


@pytest.mark.usefixtures("blob_store")
@pytest.mark.parametrize("damage", ["huge", "truncated"])
async def test_a_huge_or_truncated_animation_is_a_clear_400(
    gateway, openai, tmp_path, upload_dir, damage
):
    if damage == "huge":
        data = huge_gif(1000, (3840, 2160))
    else:
        whole = write_animation(tmp_path / "clip.gif", "GIF", scene_frames()).read_bytes()
        data = whole[: len(whole) // 2]
    async with gateway() as client:
        response = await client.post("/analyze/", files=[("files", ("a.gif", data, "image/gif"))])
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert ("megapixels" if damage == "huge" else "corrupt or truncated") in detail, detail
    assert openai.requests == []
    assert list(upload_dir.iterdir()) == []
