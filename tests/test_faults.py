"""Faults on real parts: replicas killed mid-request, NATS stopped and restarted, clients
that leave, deadlines that pass. Each test bounds its own time and checks that the blob
bucket and the upload directory end empty."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from contracts import blobs, rpc
from contracts.subjects import STORY, info_subject
from gateway import config as gateway_config
from gateway.cleanup import sweep_orphans
from gateway.uploads import UPLOAD_PREFIX
from tests.media import sample_photo
from tests.support.fake_openai import Delay, FakeOpenAI
from tests.support.gateway import gateway_client
from tests.support.nats_server import NatsServer
from tests.support.processes import ROOT, free_port, running_gateway, service_env
from tests.support.services import services_on_fake

PHOTO = sample_photo("chelsea.png")


def photo_upload() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", ("chelsea.png", PHOTO.read_bytes(), "image/png"))]


class LogRecords(logging.Handler):
    """Collects what the named loggers say."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.loggers = [logging.getLogger(name) for name in names]
        for logger in self.loggers:
            logger.addHandler(self)
            logger.setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.removeHandler(self)
            logger.setLevel(logging.NOTSET)
        super().close()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server on a fixed port and store, so it can be stopped and come back."""
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield server
    server.stop()


def in_process(url: str, fake: FakeOpenAI, *, story: bool = True) -> Any:
    """The services in this process: quick frames, a slow provider's patience, no retries."""
    return services_on_fake(url, fake, story=story, perception=False, model_timeout=30)


@asynccontextmanager
async def behind_uvicorn(
    url: str, fake: FakeOpenAI, uploads: Path
) -> AsyncIterator[tuple[dict[str, rpc.Server], httpx.AsyncClient]]:
    """The services in process and ``python -m gateway`` (real uvicorn: real disconnects)."""
    port = free_port()
    async with in_process(url, fake) as servers:
        async with running_gateway(url, port, IMGSTORY_UPLOAD_DIR=str(uploads)):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield servers, client


def gateway_settings(url: str, uploads: Path, **changes: Any) -> gateway_config.Settings:
    return replace(gateway_config.load({}), nats_url=url, upload_dir=str(uploads), **changes)


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


async def bucket_names(url: str) -> list[str]:
    client = await nats.connect(url)
    try:
        return await blobs.list_names(await blobs.open_bucket(client.jetstream()))
    finally:
        await client.close()


async def assert_nothing_left(url: str, uploads: Path) -> None:
    """The request's stored objects and upload files are all gone."""
    assert await bucket_names(url) == []
    assert list(uploads.iterdir()) == []


async def held_by_the_provider(
    client: httpx.AsyncClient, fake: FakeOpenAI, count: int = 1
) -> asyncio.Future[list[httpx.Response]]:
    """Send ``count`` photo requests and return once the provider holds them all."""
    sent = asyncio.gather(*(client.post("/analyze/", files=photo_upload()) for _ in range(count)))
    await eventually(lambda: len(fake.requests) >= count, timeout=20)
    return sent


async def eventually(check: Any, timeout: float = 10) -> None:
    """Wait until ``check()`` (sync or async) is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.1)


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


@asynccontextmanager
async def story_process(url: str, fake: FakeOpenAI) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m story_service`` talking to ``fake``, serving once the block starts;
    killed at the end if still alive."""
    before = await story_replicas(url)
    env = service_env(url, fake, IMGSTORY_OPENAI_TIMEOUT="30", IMGSTORY_OPENAI_MAX_RETRIES="0")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "story_service", cwd=ROOT, env=env
    )
    try:
        await eventually(lambda: _more_than(story_replicas(url), before), timeout=30)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# --- replica death and liveness ---------------------------------------------------------


async def test_a_killed_story_replica_is_noticed_and_its_calls_run_on_the_other(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    # A baseline answer first: what one story and one translation cost.
    async with in_process(empty_nats_url, fake, story=False):
        async with story_process(empty_nats_url, fake) as first:
            settings = gateway_settings(empty_nats_url, uploads)
            async with gateway_client(settings) as client:
                baseline = (await client.post("/analyze/", files=photo_upload())).json()
                fake.reset()
                # The first replica takes four requests and sits on them (a slow fake)...
                fake.script(*[Delay(20.0)] * 4)
                sent = await held_by_the_provider(client, fake, 4)
                # ...then a second replica joins, and the first dies holding them all.
                async with story_process(empty_nats_url, fake):
                    killed_at = time.monotonic()
                    first.send_signal(signal.SIGKILL)
                    responses = await asyncio.wait_for(sent, 30)
                    recovered_in = time.monotonic() - killed_at
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert recovered_in < 10, recovered_in
    for response in responses:
        body = response.json()
        # The dead replica's calls are not counted: the same cost as the quiet request.
        assert body["usage_by_stage"] == baseline["usage_by_stage"]
        assert body["token_usage"] == baseline["token_usage"]
    await assert_nothing_left(empty_nats_url, uploads)


async def _more_than(count: Awaitable[int], floor: int) -> bool:
    return await count > floor


async def test_with_no_replica_left_the_client_gets_503_within_seconds(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    async with in_process(empty_nats_url, fake, story=False):
        async with story_process(empty_nats_url, fake) as only:
            fake.script(Delay(30.0))
            async with gateway_client(gateway_settings(empty_nats_url, uploads)) as client:
                sent = await held_by_the_provider(client, fake)
                killed_at = time.monotonic()
                only.send_signal(signal.SIGKILL)
                (response,) = await asyncio.wait_for(sent, 20)
                answered_in = time.monotonic() - killed_at
    assert response.status_code == 503, response.text
    assert "story service is not running" in response.json()["detail"]
    assert answered_in < 8, answered_in
    await assert_nothing_left(empty_nats_url, uploads)


# --- deadlines and clients that leave -----------------------------------------------------


async def test_a_passed_deadline_is_503_and_the_service_stops_the_work(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    fake.script(Delay(20.0))
    async with in_process(empty_nats_url, fake) as servers:
        settings = gateway_settings(empty_nats_url, uploads, story_timeout=2.0)
        async with gateway_client(settings) as client:
            started = time.monotonic()
            response = await client.post("/analyze/", files=photo_upload())
            answered_in = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert "did not answer within 2 s" in response.json()["detail"]
        assert answered_in < 6, answered_in
        # The story replica dropped the call rather than waiting out the fake.
        await eventually(lambda: not servers["story"].holding, timeout=5)
    await assert_nothing_left(empty_nats_url, uploads)


async def test_a_client_that_leaves_mid_request_stops_the_work(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    fake.script(Delay(20.0))
    async with behind_uvicorn(empty_nats_url, fake, uploads) as (servers, client):
        sent = await held_by_the_provider(client, fake)
        left_at = time.monotonic()
        sent.cancel()  # the client closes its connection
        await asyncio.gather(sent, return_exceptions=True)
        await eventually(lambda: not servers["story"].holding, timeout=5)
        stopped_in = time.monotonic() - left_at
        await eventually(lambda: _empty_bucket(empty_nats_url), timeout=5)
    assert stopped_in < 5
    assert list(uploads.iterdir()) == []


@pytest.mark.parametrize("closed_at", ["uploading", "writing_story"])
async def test_closing_the_event_stream_stops_the_work_and_leaves_nothing(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path, closed_at: str
) -> None:
    fake.script(Delay(20.0))
    async with behind_uvicorn(empty_nats_url, fake, uploads) as (servers, client):
        async with client.stream("POST", "/analyze/stream", files=photo_upload()) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            while closed_at not in await anext(lines):
                pass
            if closed_at == "writing_story":
                await eventually(lambda: len(fake.requests) >= 1, timeout=20)
        # The stream is closed here.
        await eventually(lambda: not servers["story"].holding, timeout=5)
        await eventually(lambda: not servers["frames"].holding, timeout=5)
        await eventually(lambda: _empty_bucket(empty_nats_url), timeout=5)
        await eventually(lambda: not list(uploads.iterdir()), timeout=5)


async def _empty_bucket(url: str) -> bool:
    return await bucket_names(url) == []


# --- NATS outage ------------------------------------------------------------------------


async def test_while_nats_is_down_requests_get_503_fast_and_service_resumes_after(
    bus: NatsServer, fake: FakeOpenAI, uploads: Path
) -> None:
    async with in_process(bus.url, fake):
        async with gateway_client(gateway_settings(bus.url, uploads)) as client:
            assert (await client.post("/analyze/", files=photo_upload())).status_code == 200
            # Listening only now: the app's logging set-up clears existing handlers.
            records = LogRecords("contracts.rpc", "nats")
            bus.stop()
            await asyncio.sleep(0.5)
            started = time.monotonic()
            down = await client.post("/analyze/", files=photo_upload())
            answered_in = time.monotonic() - started
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["nats"] is False
            bus.start()
            back_at = time.monotonic()
            await eventually(lambda: _ready(client), timeout=15)
            ready_in = time.monotonic() - back_at
            again = await client.post("/analyze/", files=photo_upload())
    assert down.status_code == 503, down.text
    assert down.json()["detail"] == "the message bus (NATS) is unavailable"
    assert answered_in < 2, answered_in
    assert ready_in < 10, ready_in
    assert again.status_code == 200, again.text
    assert list(uploads.iterdir()) == []
    assert await bucket_names(bus.url) == []
    # One line per change of state, not a traceback per reconnect attempt.
    records.close()
    assert [r.getMessage() for r in records.records if r.exc_info] == []
    lost = [r.getMessage() for r in records.records if "lost its NATS connection" in r.getMessage()]
    back = [r.getMessage() for r in records.records if "reconnected to NATS" in r.getMessage()]
    # One line each way for the gateway and each of the three services.
    assert len(lost) == 4 and len(back) == 4, [r.getMessage() for r in records.records]


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


# --- bad input stays a 4xx ---------------------------------------------------------------


async def test_a_boundary_longer_than_the_parser_allows_is_400(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    boundary = "b" * 300
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + PHOTO.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, uploads)) as client:
            response = await client.post(
                "/analyze/",
                content=body,
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "the multipart body is malformed"
    assert list(uploads.iterdir()) == []


async def test_a_corrupt_mp4_detail_names_no_server_path(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    corrupt = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 64
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, uploads)) as client:
            response = await client.post(
                "/analyze/", files=[("files", ("broken.mp4", corrupt, "video/mp4"))]
            )
    assert response.status_code in (400, 422), response.text
    detail = json.dumps(response.json())
    for leak in ("/tmp", "imgstory-", "Errno", "<", "av.error"):
        assert leak not in detail, detail
    assert await bucket_names(empty_nats_url) == []


# --- orphans of an earlier crash --------------------------------------------------------


async def test_a_starting_gateway_sweeps_what_a_crashed_one_left(
    empty_nats_url: str, fake: FakeOpenAI, uploads: Path
) -> None:
    stale = uploads / f"{UPLOAD_PREFIX}crashed"
    stale.write_bytes(b"half an upload")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = uploads / f"{UPLOAD_PREFIX}in-flight-elsewhere"
    fresh.write_bytes(b"someone's upload")
    unrelated = uploads / "notes.txt"
    unrelated.write_text("not ours")
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, uploads)):
            pass
    assert sorted(p.name for p in uploads.iterdir()) == sorted([fresh.name, unrelated.name])


async def test_sweeping_the_bucket_removes_only_what_is_older_than_any_live_request(
    empty_nats_url: str,
) -> None:
    client = await nats.connect(empty_nats_url)
    try:
        store = await blobs.open_bucket(client.jetstream())
        await blobs.put_bytes(store, "old-request/upload-0", b"left behind")
        assert await sweep_orphans(store, older_than=3600) == 0
        assert await blobs.list_names(store) == ["old-request/upload-0"]
        await asyncio.sleep(0.05)
        assert await sweep_orphans(store, older_than=0.01) == 1
        assert await blobs.list_names(store) == []
    finally:
        await client.close()
