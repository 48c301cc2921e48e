"""story_service settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from llm.provider import ModelSettings, model_settings


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    model: ModelSettings = field(default_factory=ModelSettings)
    image_detail: str = "auto"  # OpenAI image detail: low | high | auto
    max_tokens: int = 700
    temperature: float = 0.8
    max_in_flight: int = 8  # remote model calls are I/O-bound
    blob_ttl: float = 900.0


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see README for each variable)."""
    return Settings(
        nats_url=env.get("NATS_URL", Settings.nats_url),
        model=model_settings(env, "IMGSTORY_STORY_MODEL"),
        image_detail=env.get("IMGSTORY_IMAGE_DETAIL", Settings.image_detail),
        max_tokens=int(env.get("IMGSTORY_STORY_MAX_TOKENS", Settings.max_tokens)),
        temperature=float(env.get("IMGSTORY_STORY_TEMPERATURE", Settings.temperature)),
        max_in_flight=int(env.get("IMGSTORY_STORY_IN_FLIGHT", Settings.max_in_flight)),
        blob_ttl=float(env.get("IMGSTORY_BLOB_TTL", Settings.blob_ttl)),
    )
