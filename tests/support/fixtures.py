"""The shared fixtures, loaded as a pytest plugin: NATS, the fake OpenAI server, services,
gateway (what they run lives in devstack)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import nats
import openai as openai_sdk
import pytest
from nats.aio.client import Client
from nats.js.object_store import ObjectStore

from bus import blobs, connection
from bus.jobs import JobNotFound, JobsConfig, JobStore
from devstack.fake_openai import FAKE_API_KEY, FakeOpenAI
from devstack.gateway import gateway_client
from devstack.nats_server import NatsServer
from devstack.services import services_on_fake
from gateway import config as gateway_config
from gateway.jobs.media import stored_objects

ClientFactory = Callable[..., openai_sdk.AsyncOpenAI]


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


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server of the test's own, for unit tests of one chat backend."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def api_key() -> str:
    """The key `make_client` gives its clients; a test module may override it."""
    return FAKE_API_KEY


@pytest.fixture
async def make_client(fake: FakeOpenAI, api_key: str) -> AsyncIterator[ClientFactory]:
    """A factory of real `openai` clients of `fake` (no retries unless asked), closed after the test."""
    clients: list[openai_sdk.AsyncOpenAI] = []

    def make(
        *, max_retries: int = 0, timeout: float = 5.0, base_url: str | None = None
    ) -> openai_sdk.AsyncOpenAI:
        client = openai_sdk.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or fake.base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(scope="session")
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture(scope="session")
async def services(nats_url: str, fake_openai: FakeOpenAI) -> AsyncIterator[dict]:
    """The three services, in process, over the session's NATS, talking to the fake."""
    async with services_on_fake(nats_url, fake_openai) as servers:
        yield servers


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


@pytest.fixture
async def blob_store(nc: Client, services: dict) -> AsyncIterator[ObjectStore]:
    """The blob bucket; the test fails if a request left anything in it.

    A gateway removes a request's objects just after answering, so a gateway in
    another process may still be at it when the test ends: it gets a few seconds.
    """
    store = await blobs.open_bucket(nc.jetstream())
    yield store
    deadline = time.monotonic() + 10
    while (left := await blobs.list_names(store)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert left == [], "a request left objects in the blob store"


@pytest.fixture
async def no_job_left(nc: Client, blob_store: ObjectStore) -> AsyncIterator[None]:
    """Each test's jobs are deleted after it, as their owner would, with all they own
    (before the blob store is checked for leftovers: this fixture ends first)."""
    yield
    store = await JobStore.open(nc.jetstream())
    for job_id in await store.job_ids():
        with contextlib.suppress(JobNotFound):
            record = (await store.get(job_id)).record
            await blobs.delete_quietly(blob_store, stored_objects(record))
            await store.delete(job_id)


@pytest.fixture
async def job_nc(empty_nats_url: str) -> AsyncIterator[Client]:
    """A connection to a NATS of the test's own, for the jobs' JetStream parts."""
    nc = await connection.connect(empty_nats_url, "test-jobs")
    yield nc
    await nc.drain()


@pytest.fixture
async def job_store(job_nc: Client) -> JobStore:
    """The jobs' bucket and streams on that NATS; a silent worker loses its job in 1 s."""
    return await JobStore.open(job_nc.jetstream(timeout=2), JobsConfig(ack_wait=1.0))
