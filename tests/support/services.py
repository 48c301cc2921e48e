"""The three services in process over one NATS server, their models played by the fake OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import nats

from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from llm.provider import ModelSettings
from story_service import config as story_config
from story_service.service import start_service as start_story
from tests.support.fake_openai import FAKE_API_KEY, FakeOpenAI
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation


def fake_model_settings(fake: FakeOpenAI, model: str) -> ModelSettings:
    """Settings that make a service's OpenAI backend talk to `fake`."""
    # One retry keeps the SDK's retry path honest while keeping tests quick.
    return ModelSettings(
        provider="openai",
        model=model,
        api_key=FAKE_API_KEY,
        base_url=fake.base_url,
        timeout=1.5,
        max_retries=1,
    )


@asynccontextmanager
async def services_on_fake(nats_url: str, fake: FakeOpenAI) -> AsyncIterator[dict]:
    """Frames, story and translation, each on its own connection, stopped and drained on exit."""
    connections, servers = [], {}
    starts = {
        "frames": lambda c: start_frames(c, replace(frame_config.load({}), nats_url=nats_url)),
        "story": lambda c: start_story(
            c, replace(story_config.load({}), model=fake_model_settings(fake, "fake-story"))
        ),
        "translation": lambda c: start_translation(
            c,
            replace(
                translation_config.load({}),
                model=fake_model_settings(fake, "fake-translate"),
            ),
        ),
    }
    try:
        for name, start in starts.items():
            client = await nats.connect(nats_url, name=f"test-{name}")
            connections.append(client)
            servers[name] = await start(client)
        yield servers
    finally:
        for server in servers.values():
            await server.stop()
        for client in connections:
            await client.drain()
