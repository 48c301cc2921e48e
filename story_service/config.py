"""story_service settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.blobs import Bucket, bucket_settings
from contracts.settings import Env
from llm.provider import ModelSettings, model_settings
from story_service.story import DETAILS


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    model: ModelSettings = field(default_factory=ModelSettings)
    image_detail: str = "auto"  # OpenAI image detail: low | high | auto
    max_tokens: int = 700
    temperature: float = 0.8
    max_in_flight: int = 64  # remote model calls are I/O-bound; a local model queues them
    bucket: Bucket = field(default_factory=Bucket)


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see README for each variable).

    Raises contracts.settings.SettingsError for a value the service cannot run with.
    """
    read = Env(env)
    return Settings(
        nats_url=read.text("NATS_URL", Settings.nats_url),
        model=model_settings(env, "IMGSTORY_STORY_MODEL"),
        image_detail=read.choice("IMGSTORY_IMAGE_DETAIL", Settings.image_detail, DETAILS),
        max_tokens=read.integer("IMGSTORY_STORY_MAX_TOKENS", Settings.max_tokens, minimum=1),
        temperature=read.number(
            "IMGSTORY_STORY_TEMPERATURE", Settings.temperature, minimum=0, maximum=2
        ),
        max_in_flight=read.integer("IMGSTORY_STORY_IN_FLIGHT", Settings.max_in_flight, minimum=1),
        bucket=bucket_settings(read),
    )
