"""translation_service settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bus.settings import Env
from llm.provider import ModelSettings, model_settings


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    model: ModelSettings = field(default_factory=ModelSettings)
    min_thai_share: float = 0.95  # share of letters that must be Thai script
    max_tokens: int = 1500
    temperature: float = 0.0  # greedy: the small local model adds notes when sampling
    max_in_flight: int = 128  # I/O-bound calls; the local engine queues past its slots


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see docs/configuration.md for each variable).

    Raises bus.settings.SettingsError for a value the service cannot run with.
    """
    read = Env(env)
    return Settings(
        nats_url=read.text("NATS_URL", Settings.nats_url),
        model=model_settings(env, "IMGSTORY_TRANSLATION_MODEL"),
        min_thai_share=read.number(
            "IMGSTORY_MIN_THAI_SHARE", Settings.min_thai_share, minimum=0, maximum=1
        ),
        max_tokens=read.integer("IMGSTORY_TRANSLATION_MAX_TOKENS", Settings.max_tokens, minimum=1),
        temperature=read.number(
            "IMGSTORY_TRANSLATION_TEMPERATURE", Settings.temperature, minimum=0, maximum=2
        ),
        max_in_flight=read.integer(
            "IMGSTORY_TRANSLATION_IN_FLIGHT", Settings.max_in_flight, minimum=1
        ),
    )
