"""Faults on real parts, as scenarios the tests assert on and the benchmark times.

Each scenario sets up real NATS, the services (in process, or the story service as a
process it can kill), the gateway (in process, or under real uvicorn where a client
disconnect must be real) and a fake OpenAI server whose delays time the fault. It
returns what the client got, how long it took and what was left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import nats

from bus import blobs
from bus.server import Server
from contracts.subjects import STORY, info_subject
from devstack.fake_answers import Delay
from devstack.fake_openai import FakeOpenAI
from devstack.gateway import gateway_client, running_gateway
from devstack.media import sample_photo
from devstack.nats_server import NatsServer
from devstack.processes import ProcessGroup, ended, free_port, service_env
from devstack.services import services_on_fake
from gateway import config as gateway_config

PHOTO = sample_photo("chelsea.png")
SLOW = 20.0  # seconds the fake provider sits on a call while the fault happens


def photo_upload() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", ("chelsea.png", PHOTO.read_bytes(), "image/png"))]


@dataclass
class Outcome:
    """What the client got after a fault, how soon, and what stayed behind."""

    statuses: list[int]
    details: list[str]
    seconds: float  # from the fault to the client's answer (or to the work stopping)
    left_objects: list[str]
    left_files: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


# --- the parts ----------------------------------------------------------------------------


def in_process(url: str, fake: FakeOpenAI, *, story: bool = True) -> Any:
    """The services in this process: quick frames, a slow provider's patience, no retries."""
    return services_on_fake(url, fake, story=story, perception=False, model_timeout=30)


def gateway_settings(url: str, uploads: Path, **changes: Any) -> gateway_config.Settings:
    return replace(gateway_config.load({}), nats_url=url, upload_dir=str(uploads), **changes)


@asynccontextmanager
async def behind_uvicorn(
    url: str, fake: FakeOpenAI, uploads: Path
) -> AsyncIterator[tuple[dict[str, Server], httpx.AsyncClient]]:
    """The services in process and ``python -m gateway`` (real uvicorn: real disconnects)."""
    port = free_port()
    async with in_process(url, fake) as servers:
        async with running_gateway(url, port, IMGSTORY_UPLOAD_DIR=str(uploads)):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield servers, client


async def bucket_names(url: str) -> list[str]:
    client = await nats.connect(url)
    try:
        return await blobs.list_names(await blobs.open_bucket(client.jetstream()))
    finally:
        await client.close()


async def eventually(check: Callable[[], Any], timeout: float = 10) -> None:
    """Wait until ``check()`` (sync or async) is true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.1)


async def held_by_the_provider(
    client: httpx.AsyncClient, fake: FakeOpenAI, count: int = 1
) -> asyncio.Future[list[httpx.Response]]:
    """Send ``count`` photo requests and return once the provider holds them all."""
    sent = asyncio.gather(*(client.post("/analyze/", files=photo_upload()) for _ in range(count)))
    await eventually(lambda: len(fake.requests) >= count, timeout=20)
    return sent


async def story_replicas(url: str) -> int:
    """How many story replicas serve their endpoint right now (micro INFO lists it)."""
    client = await nats.connect(url)
    try:
        inbox = client.new_inbox()
        answers = await client.subscribe(inbox)
        await client.publish(info_subject(STORY), b"", reply=inbox)
        count = 0
        until = time.monotonic() + 0.5
        while (left := until - time.monotonic()) > 0:
            try:
                msg = await answers.next_msg(timeout=left)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            if not msg.data:  # NATS's "no responders" status: nobody is there yet
                break
            count += bool(json.loads(msg.data).get("endpoints"))
        return count
    finally:
        await client.close()


async def _more_than(count: Awaitable[int], floor: int) -> bool:
    return await count > floor


@asynccontextmanager
async def story_process(url: str, fake: FakeOpenAI) -> AsyncIterator[subprocess.Popen[Any]]:
    """``python -m story_service`` talking to ``fake``, serving once the block starts;
    killed at the end if still alive."""
    before = await story_replicas(url)
    env = service_env(url, fake, IMGSTORY_OPENAI_TIMEOUT="30", IMGSTORY_OPENAI_MAX_RETRIES="0")
    async with ProcessGroup(stop_signal=signal.SIGKILL) as group:
        process = group.python("story_service", "story_service", env=env)
        await eventually(lambda: _more_than(story_replicas(url), before), timeout=30)
        yield process


class LogRecords(logging.Handler):
    """Collects what the named loggers say."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.loggers = [logging.getLogger(name) for name in names]
        for logger in self.loggers:
            logger.addHandler(self)
            logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.removeHandler(self)
            logger.setLevel(logging.NOTSET)
        super().close()

    def saying(self, words: str) -> list[str]:
        return [r.getMessage() for r in self.records if words in r.getMessage()]


async def _outcome(
    responses: list[httpx.Response], seconds: float, url: str, uploads: Path, **notes: Any
) -> Outcome:
    return Outcome(
        statuses=[r.status_code for r in responses],
        details=[r.json().get("detail", "") if r.status_code != 200 else "" for r in responses],
        seconds=seconds,
        left_objects=await bucket_names(url),
        left_files=sorted(p.name for p in uploads.iterdir()),
        notes=notes,
    )


# --- the scenarios ------------------------------------------------------------------------


async def killed_replica(url: str, fake: FakeOpenAI, uploads: Path, held: int = 4) -> Outcome:
    """A story replica holding ``held`` requests is SIGKILLed while a second one serves.

    ``seconds``: from the kill to the last answer. ``notes["baseline"]``: the body of a
    quiet request first, for comparing token counts.
    """
    async with in_process(url, fake, story=False):
        async with story_process(url, fake) as first:
            async with gateway_client(gateway_settings(url, uploads)) as client:
                baseline = (await client.post("/analyze/", files=photo_upload())).json()
                fake.reset()
                # The first replica takes the requests and sits on them (a slow provider)...
                fake.script(*[Delay(SLOW)] * held)
                sent = await held_by_the_provider(client, fake, held)
                # ...then a second replica joins, and the first dies holding them all.
                async with story_process(url, fake):
                    killed_at = time.monotonic()
                    first.send_signal(signal.SIGKILL)
                    responses = await asyncio.wait_for(sent, 30)
                    seconds = time.monotonic() - killed_at
    return await _outcome(
        responses, seconds, url, uploads, baseline=baseline, bodies=[r.json() for r in responses]
    )


async def no_replica_left(url: str, fake: FakeOpenAI, uploads: Path) -> Outcome:
    """The only story replica is SIGKILLed holding a request."""
    async with in_process(url, fake, story=False):
        async with story_process(url, fake) as only:
            fake.script(Delay(SLOW))
            async with gateway_client(gateway_settings(url, uploads)) as client:
                sent = await held_by_the_provider(client, fake)
                killed_at = time.monotonic()
                only.send_signal(signal.SIGKILL)
                responses = await asyncio.wait_for(sent, 20)
                seconds = time.monotonic() - killed_at
    return await _outcome(responses, seconds, url, uploads)


async def deadline_passed(url: str, fake: FakeOpenAI, uploads: Path, patience: float) -> Outcome:
    """The provider is slower than the gateway's ``patience`` for the story.

    ``notes["dropped_after"]``: seconds from sending until the story replica let go.
    """
    fake.script(Delay(SLOW))
    async with in_process(url, fake) as servers:
        settings = gateway_settings(url, uploads, story_timeout=patience)
        async with gateway_client(settings) as client:
            started = time.monotonic()
            response = await client.post("/analyze/", files=photo_upload())
            seconds = time.monotonic() - started
        await eventually(lambda: not servers["story"].holding, timeout=10)
        dropped_after = time.monotonic() - started
    return await _outcome([response], seconds, url, uploads, dropped_after=dropped_after)


async def client_leaves(url: str, fake: FakeOpenAI, uploads: Path) -> Outcome:
    """The client of a plain POST closes its connection while the story is written.

    ``seconds``: from the client leaving until the story replica let go.
    """
    fake.script(Delay(SLOW))
    async with behind_uvicorn(url, fake, uploads) as (servers, client):
        sent = await held_by_the_provider(client, fake)
        left_at = time.monotonic()
        sent.cancel()  # the client closes its connection
        await asyncio.gather(sent, return_exceptions=True)
        await eventually(lambda: not servers["story"].holding, timeout=10)
        seconds = time.monotonic() - left_at
        await eventually(lambda: _nothing_in(url, uploads), timeout=10)
    return await _outcome([], seconds, url, uploads)


async def stream_closed(url: str, fake: FakeOpenAI, uploads: Path, closed_at: str) -> Outcome:
    """The client of the event stream closes it once the ``closed_at`` stage is announced.

    ``seconds``: from the close until every service let go and nothing is left.
    """
    fake.script(Delay(SLOW))
    async with behind_uvicorn(url, fake, uploads) as (servers, client):
        async with client.stream("POST", "/analyze/stream", files=photo_upload()) as response:
            lines = response.aiter_lines()
            while closed_at not in await anext(lines):
                pass
            if closed_at == "writing_story":
                await eventually(lambda: len(fake.requests) >= 1, timeout=20)
        closed = time.monotonic()
        await eventually(
            lambda: not servers["story"].holding and not servers["frames"].holding, timeout=10
        )
        await eventually(lambda: _nothing_in(url, uploads), timeout=10)
        seconds = time.monotonic() - closed
    return await _outcome([], seconds, url, uploads, stream_status=response.status_code)


async def gateway_stopped(url: str, fake: FakeOpenAI, uploads: Path) -> Outcome:
    """The gateway gets SIGTERM while a request waits on the provider (3 s).

    ``seconds``: from the signal to the answer. ``notes["exit_code"]``: the gateway's.
    """
    fake.script(Delay(3.0))
    port = free_port()
    async with in_process(url, fake):
        async with running_gateway(url, port, IMGSTORY_UPLOAD_DIR=str(uploads)) as gateway:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                sent = await held_by_the_provider(client, fake)
                stopped_at = time.monotonic()
                gateway.send_signal(signal.SIGTERM)
                responses = await asyncio.wait_for(sent, 30)
                seconds = time.monotonic() - stopped_at
            exit_code = await ended(gateway, 20)
    return await _outcome(responses, seconds, url, uploads, exit_code=exit_code)


async def _nothing_in(url: str, uploads: Path) -> bool:
    return not list(uploads.iterdir()) and await bucket_names(url) == []


async def nats_outage(bus: NatsServer, fake: FakeOpenAI, uploads: Path) -> Outcome:
    """NATS stops between two requests, a request comes while it is down, then it returns.

    ``seconds``: the answer while down. Notes: readiness while down, seconds until
    ready again, the status after, and the connection log lines.
    """
    async with in_process(bus.url, fake):
        async with gateway_client(gateway_settings(bus.url, uploads)) as client:
            first = await client.post("/analyze/", files=photo_upload())
            # Listening only now: the app's start-up replaces logging handlers. The bus
            # modules are what contracts.rpc was: the connection, the client and the server.
            records = LogRecords("bus.connection", "bus.rpc", "bus.server", "bus.endpoint", "nats")
            bus.stop()
            await asyncio.sleep(0.5)
            started = time.monotonic()
            down = await client.post("/analyze/", files=photo_upload())
            seconds = time.monotonic() - started
            ready_while_down = (await client.get("/readyz")).json()
            bus.start()
            back_at = time.monotonic()
            await eventually(lambda: _ready(client), timeout=15)
            ready_after = time.monotonic() - back_at
            again = await client.post("/analyze/", files=photo_upload())
    records.close()
    return await _outcome(
        [first, down, again],
        seconds,
        bus.url,
        uploads,
        ready_while_down=ready_while_down,
        ready_after=ready_after,
        tracebacks=[r.getMessage() for r in records.records if r.exc_info],
        lost=records.saying("lost its NATS connection"),
        back=records.saying("reconnected to NATS"),
    )


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
