"""Durable jobs under faults on real processes: a gateway SIGKILLed mid-job with another
running, NATS restarted mid-job, a cluster node lost while jobs run, and jobs expiring
with no one left to sweep them. Each test bounds its own time."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client

from bus import blobs
from bus.jobs import JobNotFound, JobStore, Versioned
from contracts.subjects import JOB_EVENTS_STREAM, JOBS_BUCKET, JOBS_STREAM, job_events_subject
from devstack.fake_answers import Reply
from devstack.fake_openai import FakeOpenAI
from devstack.faults import eventually, photo_upload
from devstack.gateway import running_gateway
from devstack.nats_server import NatsServer
from devstack.processes import ended, free_port
from devstack.services_processes import running_services

log = logging.getLogger(__name__)

FINISHED = {"succeeded", "failed", "canceled"}
# A story the provider writes slowly: about a minute, far longer than any fault here takes.
SLOW_STORY = Reply("The Long Road\n\n" + "They walked on. " * 400, pace=0.05)
# Quick frames: the faults are about the jobs, not about perceiving pictures.
QUICK_SERVICES = {"IMGSTORY_PERCEPTION": "0"}
LEASE = "3"  # seconds (the least allowed): a dead worker's job is delivered again soon


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server on a fixed port and store, so it can be stopped and come back."""
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


# --- reading a job ---------------------------------------------------------------------


async def record_of(url: str, job_id: str) -> Versioned:
    """The job's record straight from the KV bucket (what no HTTP view shows: its worker)."""
    client = await nats.connect(url)
    try:
        store = await JobStore.open(client.jetstream())
        return await store.get(job_id)
    finally:
        await client.close()


async def until_finished(client: httpx.AsyncClient, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in FINISHED:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish within {timeout} s: {job}")
        await asyncio.sleep(0.1)


def sse(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) of each Server-Sent Event in ``text``."""
    found = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            found.append((int(fields["id"]), fields["event"], msgspec.json.decode(fields["data"])))
    return found


async def events_of(client: httpx.AsyncClient, job_id: str) -> list[tuple[int, str, dict]]:
    """Every event of a finished job, replayed from the start."""
    response = await asyncio.wait_for(client.get(f"/jobs/{job_id}/events"), 15)
    assert response.status_code == 200, response.text
    return sse(response.text)


async def submit(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/jobs", files=photo_upload())
    assert response.status_code == 202, response.text
    return response.json()


# --- a gateway lost mid-job ------------------------------------------------------------


async def test_a_job_whose_gateway_is_killed_finishes_once_on_the_other(
    bus: NatsServer, fake: FakeOpenAI, logs: Path, upload_dir: Path
) -> None:
    gateway_env = {"IMGSTORY_JOB_LEASE": LEASE, "IMGSTORY_UPLOAD_DIR": str(upload_dir)}
    port_a, port_b = free_port(), free_port()
    async with running_services(bus.url, fake, logs, **QUICK_SERVICES):
        async with running_gateway(bus.url, port_a, **gateway_env) as gateway_a:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_a}", timeout=10) as a:
                # What one quiet run costs, to compare the faulted job's bill with.
                quiet = await until_finished(a, (await submit(a))["id"], timeout=30)
                assert quiet["status"] == "succeeded", quiet
                calls_per_run = len(fake.requests)
                fake.script(SLOW_STORY)
                job = await submit(a)
                # Only A runs workers yet: the job is A's, and A is writing its story.
                await eventually(lambda: _writing_story(a, job["id"]), timeout=20)
                await eventually(lambda: len(fake.requests) > calls_per_run, timeout=10)
                claimed = await record_of(bus.url, job["id"])
                assert claimed.record.worker is not None
                assert claimed.record.worker.endswith(f"-{gateway_a.pid}")
                assert claimed.record.attempts == 1
                async with running_gateway(bus.url, port_b, **gateway_env):
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port_b}", timeout=10
                    ) as b:
                        assert (await b.get(f"/jobs/{job['id']}")).json()["status"] == "running"
                        killed_at = time.monotonic()
                        gateway_a.send_signal(signal.SIGKILL)
                        await ended(gateway_a, 5)
                        done = await until_finished(b, job["id"], timeout=30)
                        finished_in = time.monotonic() - killed_at
                        events = await events_of(b, job["id"])
                        taken_over = await record_of(bus.url, job["id"])
                        # The dead gateway's story call is not left running at the provider.
                        await eventually(lambda: fake.stats()["in_flight"] == 0, timeout=5)
                        calls = len(fake.requests)
    log.info("finished %.1f s after the kill", finished_in)
    assert done["status"] == "succeeded" and done["error"] is None, done
    assert done["attempts"] == 2
    assert (
        taken_over.record.worker is not None and taken_over.record.worker != claimed.record.worker
    )
    # Billed once: the result is the second attempt's alone, as dear as a quiet run.
    assert done["result"]["token_usage"] == quiet["result"]["token_usage"]
    assert done["result"]["usage_by_stage"] == quiet["result"]["usage_by_stage"]
    assert "They walked on" not in done["result"]["english"]
    # The slow first story, then one whole run: nothing else was asked of the provider.
    assert calls == calls_per_run * 2 + 1, (calls, calls_per_run)
    names = [name for _, name, _ in events]
    statuses = [data["status"] for _, name, data in events if name == "status"]
    assert names.count("result") == 1 and names[-2:] == ["result", "status"], names
    assert statuses == ["queued", "running", "running", "succeeded"], statuses
    assert [data["attempts"] for _, name, data in events if name == "status"][1:] == [1, 2, 2]
    assert finished_in < 20, finished_in


async def _writing_story(client: httpx.AsyncClient, job_id: str) -> bool:
    job = (await client.get(f"/jobs/{job_id}")).json()
    assert job["status"] not in FINISHED, job
    return job["stage"] == "writing_story"


# --- NATS restarted mid-job -------------------------------------------------------------


async def test_a_job_outlives_a_nats_restart_mid_story(
    bus: NatsServer, fake: FakeOpenAI, logs: Path, upload_dir: Path
) -> None:
    gateway_env = {"IMGSTORY_JOB_LEASE": LEASE, "IMGSTORY_UPLOAD_DIR": str(upload_dir)}
    port = free_port()
    async with running_services(bus.url, fake, logs, **QUICK_SERVICES):
        async with running_gateway(bus.url, port, **gateway_env):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                fake.script(SLOW_STORY)
                job = await submit(client)
                await eventually(lambda: _writing_story(client, job["id"]), timeout=20)
                await eventually(lambda: len(fake.requests) >= 1, timeout=10)
                stopped_at = time.monotonic()
                bus.stop()
                # Longer than the gateway waits for a silent replica (IMGSTORY_LIVENESS_WINDOW,
                # 3 s): the story call is given up on while the bus is away.
                await asyncio.sleep(4)
                bus.start()
                done = await until_finished(client, job["id"], timeout=30)
                finished_in = time.monotonic() - stopped_at
                events = await events_of(client, job["id"])
                # The interrupted attempt's story call was dropped, not left running.
                await eventually(lambda: fake.stats()["in_flight"] == 0, timeout=5)
    log.info("finished %.1f s after NATS stopped", finished_in)
    # Interrupted by the outage, the job went back to the queue and its next attempt
    # succeeded, rather than ending failed for a fault that was not its own.
    assert done["status"] == "succeeded" and done["error"] is None, done
    assert done["attempts"] == 2
    assert "They walked on" not in done["result"]["english"]
    assert fake.abandoned == 1  # the first story, cut off
    names = [name for _, name, _ in events]
    statuses = [data["status"] for _, name, data in events if name == "status"]
    assert names.count("result") == 1 and names[-2:] == ["result", "status"], names
    assert statuses == ["queued", "running", "running", "succeeded"], statuses
    assert finished_in < 20, finished_in
