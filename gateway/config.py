"""Gateway settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int = 10 * MIB
    max_video_bytes: int = 50 * MIB
    max_images: int = 10
    max_prompt_chars: int = 2000


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    host: str = "127.0.0.1"
    port: int = 8000
    limits: Limits = field(default_factory=Limits)
    max_frames: int = 8  # frames taken from a video
    frames_timeout: float = 120.0
    story_timeout: float = 300.0  # above the story service's own model timeout x retries
    translation_timeout: float = 300.0
    ping_timeout: float = 1.0
    blob_ttl: float = 900.0  # backstop only: every request deletes its objects
    upload_dir: str | None = None  # temp files for uploads; None means the system's


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see README for each variable)."""
    limits = Limits(
        max_image_bytes=int(float(env.get("IMGSTORY_MAX_IMAGE_MB", 10)) * MIB),
        max_video_bytes=int(float(env.get("IMGSTORY_MAX_VIDEO_MB", 50)) * MIB),
        max_images=int(env.get("IMGSTORY_MAX_IMAGES", 10)),
        max_prompt_chars=int(env.get("IMGSTORY_MAX_PROMPT_CHARS", 2000)),
    )
    return Settings(
        nats_url=env.get("NATS_URL", Settings.nats_url),
        host=env.get("IMGSTORY_HOST", Settings.host),
        port=int(env.get("IMGSTORY_PORT", Settings.port)),
        limits=limits,
        max_frames=int(env.get("IMGSTORY_MAX_FRAMES", Settings.max_frames)),
        frames_timeout=float(env.get("IMGSTORY_FRAMES_TIMEOUT", Settings.frames_timeout)),
        story_timeout=float(env.get("IMGSTORY_STORY_TIMEOUT", Settings.story_timeout)),
        translation_timeout=float(
            env.get("IMGSTORY_TRANSLATION_TIMEOUT", Settings.translation_timeout)
        ),
        blob_ttl=float(env.get("IMGSTORY_BLOB_TTL", Settings.blob_ttl)),
        upload_dir=env.get("IMGSTORY_UPLOAD_DIR") or None,
    )
