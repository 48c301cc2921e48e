"""translation_service settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from llm.provider import ModelSettings, model_settings


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    model: ModelSettings = field(default_factory=ModelSettings)
    min_thai_share: float = 0.95  # share of letters that must be Thai script
    max_tokens: int = 1500
    temperature: float = 0.0  # greedy: the small local model adds notes when sampling
    max_in_flight: int = 8  # remote model calls are I/O-bound


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see README for each variable)."""
    return Settings(
        nats_url=env.get("NATS_URL", Settings.nats_url),
        model=model_settings(env, "IMGSTORY_TRANSLATION_MODEL"),
        min_thai_share=float(env.get("IMGSTORY_MIN_THAI_SHARE", Settings.min_thai_share)),
        max_tokens=int(env.get("IMGSTORY_TRANSLATION_MAX_TOKENS", Settings.max_tokens)),
        temperature=float(env.get("IMGSTORY_TRANSLATION_TEMPERATURE", Settings.temperature)),
        max_in_flight=int(env.get("IMGSTORY_TRANSLATION_IN_FLIGHT", Settings.max_in_flight)),
    )
