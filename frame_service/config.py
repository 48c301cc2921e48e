"""frame_service settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bus.blobs import Bucket, bucket_settings
from bus.settings import Env, SettingsError
from frame_service.frames import VIDEO_FRAME_BOUNDS, DecodeBudget, FrameBounds


def _cores() -> int:
    """The CPUs this process may run on: its affinity, which a container's cpuset narrows."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has it
        return os.cpu_count() or 1


def _videos_at_once() -> int:
    # A video decodes on several cores (FFmpeg's frame threads): half of them for videos
    # leaves the rest to photos.
    return max(1, _cores() // 2)


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    bounds: FrameBounds = field(default_factory=FrameBounds)  # photos
    video_bounds: FrameBounds = VIDEO_FRAME_BOUNDS
    # Photos and videos wait in separate queues, so a photo never waits behind videos;
    # decoding is CPU-bound, so the defaults follow the cores.
    photos_in_flight: int = field(default_factory=_cores)
    videos_in_flight: int = field(default_factory=_videos_at_once)
    video_budget: DecodeBudget = field(default_factory=DecodeBudget)
    bucket: Bucket = field(default_factory=Bucket)
    work_dir: str | None = None  # where uploads are fetched to; None means the system's temp
    perception: bool = True  # scene facts (labels, faces, colours, OCR, EXIF) for text-only models
    ocr: bool = True  # read text in pictures when tesseract is installed
    transcribe: bool = True  # transcribe what is said in videos (faster-whisper)


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see docs/configuration.md for each variable).

    Raises bus.settings.SettingsError for a value the service cannot run with.
    """
    read = Env(env)
    bounds = _bounds(read)
    return Settings(
        nats_url=read.text("NATS_URL", Settings.nats_url),
        bounds=bounds,
        video_bounds=_video_bounds(read, bounds),
        photos_in_flight=read.integer("IMGSTORY_FRAMES_IN_FLIGHT", _cores(), minimum=1),
        videos_in_flight=read.integer("IMGSTORY_VIDEOS_IN_FLIGHT", _videos_at_once(), minimum=1),
        video_budget=_video_budget(read),
        bucket=bucket_settings(read),
        work_dir=read.optional("IMGSTORY_WORK_DIR"),
        perception=read.flag("IMGSTORY_PERCEPTION", Settings.perception),
        ocr=read.flag("IMGSTORY_OCR", Settings.ocr),
        transcribe=read.flag("IMGSTORY_TRANSCRIBE", Settings.transcribe),
    )


def _video_bounds(read: Env, photos: FrameBounds) -> FrameBounds:
    """The photos' quality and safety limits, with the video frames' own, smaller size."""
    return replace(
        photos,
        max_side=read.integer(
            "IMGSTORY_VIDEO_FRAME_MAX_SIDE", VIDEO_FRAME_BOUNDS.max_side, minimum=1
        ),
        short_side=read.integer(
            "IMGSTORY_VIDEO_FRAME_SHORT_SIDE", VIDEO_FRAME_BOUNDS.short_side, minimum=1
        ),
    )


def _video_budget(read: Env) -> DecodeBudget:
    defaults = DecodeBudget()
    return DecodeBudget(
        seconds=read.number(
            "IMGSTORY_VIDEO_DECODE_SECONDS", defaults.seconds, positive=True, maximum=3600
        ),
        frames=read.integer(
            "IMGSTORY_VIDEO_DECODE_FRAMES", defaults.frames, minimum=1, maximum=10_000_000
        ),
        megapixels=read.integer(
            "IMGSTORY_ANIMATION_DECODE_MEGAPIXELS",
            defaults.megapixels,
            minimum=1,
            maximum=1_000_000,
        ),
    )


def _bounds(read: Env) -> FrameBounds:
    defaults = FrameBounds()
    max_side = read.integer("IMGSTORY_FRAME_MAX_SIDE", defaults.max_side, minimum=1)
    short_side = read.integer("IMGSTORY_FRAME_SHORT_SIDE", defaults.short_side, minimum=1)
    jpeg_quality = read.integer(
        "IMGSTORY_FRAME_JPEG_QUALITY", defaults.jpeg_quality, minimum=1, maximum=95
    )
    max_pixels = read.integer("IMGSTORY_MAX_PIXELS", defaults.max_pixels, minimum=1)
    max_decoded_mb = read.integer(
        "IMGSTORY_MAX_DECODED_MB", defaults.max_decoded_mb, minimum=16, maximum=65_536
    )
    try:
        return FrameBounds(
            max_side=max_side,
            short_side=short_side,
            jpeg_quality=jpeg_quality,
            max_pixels=max_pixels,
            max_decoded_mb=max_decoded_mb,
        )
    except ValueError as err:
        # FrameBounds checks itself as well; whatever it refuses, the service cannot run with.
        raise SettingsError(str(err)) from err
