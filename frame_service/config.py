"""frame_service settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from frame_service.frames import FrameBounds


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    bounds: FrameBounds = field(default_factory=FrameBounds)
    max_in_flight: int = 2  # decoding is CPU-bound: about one per core
    blob_ttl: float = 900.0
    work_dir: str | None = None  # where uploads are fetched to; None means the system's temp
    perception: bool = True  # scene facts (labels, faces, colours, OCR, EXIF) for text-only models
    ocr: bool = True  # read text in pictures when tesseract is installed
    transcribe: bool = True  # transcribe what is said in videos (faster-whisper)


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see README for each variable)."""
    defaults = FrameBounds()
    bounds = FrameBounds(
        max_side=int(env.get("IMGSTORY_FRAME_MAX_SIDE", defaults.max_side)),
        short_side=int(env.get("IMGSTORY_FRAME_SHORT_SIDE", defaults.short_side)),
        jpeg_quality=int(env.get("IMGSTORY_FRAME_JPEG_QUALITY", defaults.jpeg_quality)),
        max_pixels=int(env.get("IMGSTORY_MAX_PIXELS", defaults.max_pixels)),
    )
    return Settings(
        nats_url=env.get("NATS_URL", Settings.nats_url),
        bounds=bounds,
        max_in_flight=int(env.get("IMGSTORY_FRAMES_IN_FLIGHT", Settings.max_in_flight)),
        blob_ttl=float(env.get("IMGSTORY_BLOB_TTL", Settings.blob_ttl)),
        work_dir=env.get("IMGSTORY_WORK_DIR") or None,
        perception=_flag(env.get("IMGSTORY_PERCEPTION", "1")),
        ocr=_flag(env.get("IMGSTORY_OCR", "1")),
        transcribe=_flag(env.get("IMGSTORY_TRANSCRIBE", "1")),
    )


def _flag(value: str) -> bool:
    return value.strip().lower() not in {"0", "false", "no", "off", ""}
