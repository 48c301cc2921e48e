"""Shared fixtures: a real nats-server, a fake OpenAI server, the services and the gateway."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client

from contracts import blobs
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from gateway import config as gateway_config
from gateway.app import create_app
from llm.provider import ModelSettings
from story_service import config as story_config
from story_service.service import start_service as start_story
from tests.fake_openai import FakeOpenAI
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation

ROOT = Path(__file__).resolve().parent.parent


def nats_server_binary() -> str:
    """The nats-server on PATH, or the one the virtualenv installed."""
    found = shutil.which("nats-server") or shutil.which(
        "nats-server", path=str(Path(sys.executable).parent)
    )
    if not found:
        pytest.fail("nats-server not found: run `make test`, which installs it")
    return found


class NatsServer:
    """A throwaway nats-server with JetStream on a free port and a temp store."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> NatsServer:
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                "-1",
                "-sd",
                str(self.store_dir),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        assert self.process.stderr is not None
        for line in self.process.stderr:
            found = re.search(r"Listening for client connections on (\S+):(\d+)", line)
            if found:
                self.url = f"nats://127.0.0.1:{found.group(2)}"
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("nats-server did not start")
        # Keep draining its log so the pipe never fills and blocks the server.
        import threading

        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server.url
    server.stop()


@pytest.fixture
def empty_nats_url(tmp_path: Path) -> Iterator[str]:
    """A NATS server with no service attached, for 'service down' paths."""
    server = NatsServer(tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def openai(fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The fake, emptied of script and records before and after each test."""
    fake_openai.reset()
    yield fake_openai
    fake_openai.reset()


def fake_model_settings(fake: FakeOpenAI, model: str) -> ModelSettings:
    # One retry keeps the SDK's retry path honest while keeping tests quick.
    return ModelSettings(
        provider="openai",
        model=model,
        api_key="sk-test-not-a-real-key",
        base_url=fake.base_url,
        timeout=1.5,
        max_retries=1,
    )


@pytest.fixture(scope="session")
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture(scope="session")
async def services(nats_url: str, fake_openai: FakeOpenAI) -> AsyncIterator[dict]:
    """The three services, in process, over the session's NATS, talking to the fake."""
    connections, servers = [], {}
    starts = {
        "frames": lambda c: start_frames(c, replace(frame_config.load({}), nats_url=nats_url)),
        "story": lambda c: start_story(
            c, replace(story_config.load({}), model=fake_model_settings(fake_openai, "fake-story"))
        ),
        "translation": lambda c: start_translation(
            c,
            replace(
                translation_config.load({}),
                model=fake_model_settings(fake_openai, "fake-translate"),
            ),
        ),
    }
    for name, start in starts.items():
        client = await nats.connect(nats_url, name=f"test-{name}")
        connections.append(client)
        servers[name] = await start(client)
    yield servers
    for server in servers.values():
        await server.stop()
    for client in connections:
        await client.drain()


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def gateway_settings(nats_url: str, upload_dir: Path) -> gateway_config.Settings:
    return replace(gateway_config.load({}), nats_url=nats_url, upload_dir=str(upload_dir))


@pytest.fixture
def gateway(services: dict, gateway_settings: gateway_config.Settings) -> Callable:
    """A factory: ``async with gateway() as client`` runs the real app against real services."""

    return lambda settings=None: gateway_client(settings or gateway_settings)


@asynccontextmanager
async def gateway_client(settings: gateway_config.Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the real app, served in this event loop.

    Litestar's AsyncTestClient runs the app in a portal thread and blocks this loop
    while it waits, which would starve the in-process services of the same loop.
    """
    app = create_app(settings)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as client:
            yield client


@pytest.fixture
async def blob_store(nc: Client, services: dict):
    """The blob bucket; the test fails if a request left anything in it."""
    store = await blobs.open_bucket(nc.jetstream(), ttl=900)
    yield store
    assert await blobs.list_names(store) == [], "a request left objects in the blob store"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(nats_url: str, fake: FakeOpenAI | None = None, **extra: str) -> dict[str, str]:
    """Environment for running a service or the gateway as a real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMGSTORY_"))}
    env.update({"NATS_URL": nats_url, "PYTHONPATH": str(ROOT)})
    if fake is not None:
        env.update({"OPENAI_API_KEY": "sk-test-not-a-real-key", "OPENAI_BASE_URL": fake.base_url})
    env.update(extra)
    return env
