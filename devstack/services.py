"""The three services in process over one NATS server, their models played by the fake OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from nats.aio.client import Client

from bus import connection
from bus.server import Server
from devstack.fake_openai import FAKE_API_KEY, FakeOpenAI
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from llm.provider import ModelSettings
from story_service import config as story_config
from story_service.service import start_service as start_story
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
async def services_on_fake(
    nats_url: str,
    fake: FakeOpenAI,
    *,
    story: bool = True,
    perception: bool = True,
    model_timeout: float | None = None,
) -> AsyncIterator[dict[str, Server]]:
    """Frames, story and translation, each on its own connection, stopped and closed on exit.

    Connections are made as the services make them (reconnecting for ever). ``story``
    False leaves the story service out (a test runs it as a process); ``perception``
    False skips scene facts and transcription (quick frames); ``model_timeout`` gives
    slow-provider tests a longer, retry-free model call.
    """
    model = fake_model_settings(fake, "fake")
    if model_timeout is not None:
        model = replace(model, timeout=model_timeout, max_retries=0)
    frames = replace(frame_config.load({}), nats_url=nats_url)
    if not perception:
        frames = replace(frames, perception=False, ocr=False, transcribe=False)
    starts: dict[str, Callable[[Client], Awaitable[Server]]] = {
        "frames": lambda c: start_frames(c, frames),
        "translation": lambda c: start_translation(
            c, replace(translation_config.load({}), model=replace(model, model="fake-translate"))
        ),
    }
    if story:
        starts["story"] = lambda c: start_story(
            c, replace(story_config.load({}), model=replace(model, model="fake-story"))
        )
    connections: list[Client] = []
    servers: dict[str, Server] = {}
    try:
        for name, start in starts.items():
            client = await connection.connect(nats_url, f"test-{name}")
            connections.append(client)
            servers[name] = await start(client)
        yield servers
    finally:
        for server in servers.values():
            await server.stop()
        for client in connections:
            await client.close()
