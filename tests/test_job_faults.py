"""Durable jobs under faults on real processes: a gateway SIGKILLed mid-job with another
running, NATS restarted mid-job, a cluster node lost while jobs run, and jobs expiring
with no one left to sweep them. Each test bounds its own time."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from bus import blobs, connection
from bus.blobs import Bucket
from bus.jobs import JobsConfig, JobStore, Versioned
from contracts.messages import JobRecord, JobStatus, JobUpload, MediaKind, RunJob
from contracts.subjects import JOB_EVENTS_STREAM, JOBS_BUCKET, JOBS_STREAM, job_events_subject
from devstack.fake_answers import Delay, Reply
from devstack.fake_openai import FakeOpenAI
from devstack.faults import eventually, gateway_settings, photo_upload
from devstack.gateway import gateway_client, running_gateway
from devstack.nats_cluster import ClusterNode, NatsCluster
from devstack.nats_server import NatsServer
from devstack.processes import ended, free_port
from devstack.services import services_on_fake
from devstack.services_processes import running_services
from gateway import config as gateway_config
from gateway.jobs.worker import JobInterrupted, JobRun, Workers, WorkerSettings

log = logging.getLogger(__name__)

FINISHED = {"succeeded", "failed", "canceled"}
# A story the provider writes slowly: about a minute, far longer than any fault here takes.
SLOW_STORY = Reply("The Long Road\n\n" + "They walked on. " * 400, pace=0.05)
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
        response = await client.get(f"/jobs/{job_id}")
        # A 503 while the jobs' stream elects a leader is asked again.
        job = response.json() if response.status_code == 200 else {"status": response.text}
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
    # Quick frames (no scene facts): the fault is about the jobs, not the pictures.
    async with running_services(bus.url, fake, logs, IMGSTORY_PERCEPTION="0"):
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
    async with running_services(bus.url, fake, logs, IMGSTORY_PERCEPTION="0"):
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


async def test_a_job_interrupted_on_its_last_attempt_ends_failed_with_why(
    empty_nats_url: str,
) -> None:
    runs: list[int] = []

    async def runner(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        runs.append(record.attempts)
        raise JobInterrupted(503, "the message bus (NATS) is unavailable")

    client = await connection.connect(empty_nats_url, "test-interrupted")
    try:
        store = await JobStore.open(client.jetstream(timeout=2), JobsConfig(ack_wait=3.0))
        workers = Workers(client, store, runner, WorkerSettings(workers=1, max_attempts=2))
        await workers.start()
        try:
            now = time.time()
            record = JobRecord(
                id="job-1",
                status=JobStatus.QUEUED,
                created_at=now,
                expires_at=now + 60,
                kind=MediaKind.IMAGE,
                uploads=[],
            )
            await store.create(record)
            await store.enqueue(RunJob(job_id="job-1"))
            await eventually(lambda: _finished(store, "job-1"), timeout=10)
        finally:
            await workers.close()
        failed = (await store.get("job-1")).record
        queued = await store.unfinished("anyone")
    finally:
        await client.close()
    assert runs == [1, 2]  # handed back once, then failed on the last attempt
    assert failed.status is JobStatus.FAILED and failed.attempts == 2
    assert failed.error is not None
    assert (failed.error.status, failed.error.detail) == (
        503,
        "the message bus (NATS) is unavailable",
    )
    assert queued == (0, 0)


async def _finished(store: JobStore, job_id: str) -> bool:
    return (await store.get(job_id)).record.status.finished


# --- a cluster node lost while jobs run ----------------------------------------------------


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster").start()
    try:
        await nodes.ready(timeout=15)
        yield nodes
    finally:
        nodes.stop()


async def jobs_leader(cluster: NatsCluster, settings: gateway_config.Settings) -> ClusterNode:
    """Make the bucket and the jobs' KV and streams on three replicas, as the gateway
    would; return the node leading the jobs' KV (every change of a job's state)."""
    client = await connection.connect(cluster.seeds(), "test-jobs")
    try:
        js = client.jetstream(timeout=5)
        await blobs.open_bucket(js, settings.bucket)
        config = JobsConfig(ttl=settings.jobs.ttl, replicas=3, ack_wait=settings.jobs.lease)
        await JobStore.open(js, config)
        kv = await js.stream_info(f"KV_{JOBS_BUCKET}")
        work = await js.stream_info(JOBS_STREAM)
        assert kv.config.num_replicas == work.config.num_replicas == 3
        assert kv.cluster is not None and kv.cluster.leader is not None
        assert work.cluster is not None
        log.info(
            "the jobs' KV is led by %s, their work by %s", kv.cluster.leader, work.cluster.leader
        )
        return cluster.node(kv.cluster.leader)
    finally:
        await client.close()


@pytest.mark.slow
async def test_jobs_running_when_the_node_leading_their_state_dies_all_succeed_once(
    cluster: NatsCluster, fake: FakeOpenAI, upload_dir: Path
) -> None:
    count = 4
    settings = replace(
        gateway_config.load({}), upload_dir=str(upload_dir), bucket=Bucket(replicas=3)
    )
    leader = await asyncio.wait_for(jobs_leader(cluster, settings), 15)
    survivor = next(node for node in cluster.nodes if node is not leader)
    fake.script(*[Delay(1.5)] * count)  # each job's story
    # The gateway (its workers) loses its node and the jobs' state its leader at once;
    # the services are on a node that lives.
    async with services_on_fake(survivor.url, fake, perception=False, model_timeout=30):
        async with gateway_client(replace(settings, nats_url=leader.url)) as client:
            jobs = [await submit(client) for _ in range(count)]
            await eventually(lambda: len(fake.requests) >= count, timeout=20)
            killed_at = time.monotonic()
            cluster.kill(leader)
            done = [await until_finished(client, job["id"], timeout=45) for job in jobs]
            finished_in = time.monotonic() - killed_at
            events = [await events_of(client, job["id"]) for job in jobs]
    log.info(
        "all finished %.1f s after the kill: attempts %s",
        finished_in,
        [j["attempts"] for j in done],
    )
    assert [job["status"] for job in done] == ["succeeded"] * count, done
    for job_events in events:  # each succeeded once, with one result
        names = [name for _, name, _ in job_events]
        statuses = [data["status"] for _, name, data in job_events if name == "status"]
        assert names.count("result") == 1 and statuses.count("succeeded") == 1, names
        assert statuses[-1] == "succeeded"
        assert {"stage", "story", "thai"} <= set(names), names  # none lost to the election
    stories = [r for r in fake.requests if r["model"] == "fake-story"]
    assert len(stories) == count + sum(job["attempts"] - 1 for job in done)
    client_ = await connection.connect(survivor.url, "test-jobs")
    try:
        js = client_.jetstream(timeout=5)
        work = await js.stream_info(JOBS_STREAM)
        kv = await js.stream_info(f"KV_{JOBS_BUCKET}")
    finally:
        await client_.close()
    assert work.state.messages == 0  # no work left behind, none lost
    assert kv.state.messages == count
    assert finished_in < 30, finished_in


# --- expiry --------------------------------------------------------------------------------

TTL = 3.0  # seconds a job lives here (the setting's least is 60 s: set in code, not the env)


async def leftovers(url: str, job_id: str) -> dict[str, int]:
    """What is left of a job in the KV, its events, the work queue and the blob bucket."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        kv = await js.stream_info(
            f"KV_{JOBS_BUCKET}", subjects_filter=f"$KV.{JOBS_BUCKET}.{job_id}"
        )
        events = await js.stream_info(JOB_EVENTS_STREAM, subjects_filter=job_events_subject(job_id))
        work = await js.stream_info(JOBS_STREAM)
        media = await blobs.list_names(await blobs.open_bucket(js))
        return {
            "record": sum((kv.state.subjects or {}).values()),
            "events": sum((events.state.subjects or {}).values()),
            "work": work.state.messages,
            "media": len([name for name in media if name.startswith(f"jobs/{job_id}/")]),
        }
    finally:
        await client.close()


def short_lived(
    url: str, upload_dir: Path, bucket_ttl: float | None = None
) -> gateway_config.Settings:
    settings = gateway_settings(url, upload_dir)
    bucket = replace(settings.bucket, ttl=bucket_ttl or settings.bucket.ttl)
    return replace(settings, jobs=replace(settings.jobs, ttl=TTL), bucket=bucket)


async def test_an_expired_job_is_swept_with_all_it_owns(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    # A pure front door: the job waits, its upload stored, until it expires unrun (an
    # ended job's upload is removed at once; a waiting one's only by the sweep).
    settings = short_lived(empty_nats_url, upload_dir)
    front_door = replace(settings, jobs=replace(settings.jobs, workers=0))
    async with services_on_fake(empty_nats_url, fake, perception=False):
        async with gateway_client(front_door) as client:
            job = await submit(client)
            waiting = (await client.get(f"/jobs/{job['id']}")).json()
            kept = await leftovers(empty_nats_url, job["id"])
            await eventually(lambda: _gone(client, job["id"]), timeout=TTL + 5)
            await eventually(lambda: _nothing_left(empty_nats_url, job["id"]), timeout=5)
            left = await leftovers(empty_nats_url, job["id"])
    assert waiting["status"] == "queued"
    assert kept["record"] == 1 and kept["events"] > 0 and kept["media"] == 1, kept
    # The media have the bucket's day-long expiry: only the gateway's sweep removed them.
    assert left == {"record": 0, "events": 0, "work": 0, "media": 0}, left


async def _nothing_left(url: str, job_id: str) -> bool:
    return not any((await leftovers(url, job_id)).values())


async def _gone(client: httpx.AsyncClient, job_id: str) -> bool:
    # The events only once the job is gone: an unfinished job's stream has no end.
    if (await client.get(f"/jobs/{job_id}")).status_code != 404:
        return False
    return (await client.get(f"/jobs/{job_id}/events")).status_code == 404


async def test_an_expired_job_is_gone_though_no_gateway_ran_to_sweep_it(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    # The bucket keeps objects no longer than jobs live (IMGSTORY_BLOB_TTL = IMGSTORY_JOB_TTL).
    settings = short_lived(empty_nats_url, upload_dir, bucket_ttl=TTL)
    client = await nats.connect(empty_nats_url)
    try:
        await blobs.open_bucket(client.jetstream(), settings.bucket)  # before the services
    finally:
        await client.close()
    async with services_on_fake(empty_nats_url, fake, perception=False):
        async with gateway_client(settings) as gateway:
            job = await submit(gateway)
            done = await until_finished(gateway, job["id"], timeout=TTL)
            kept = await leftovers(empty_nats_url, job["id"])
        # No gateway runs from here: the streams' own max_age is all that removes the job.
        await eventually(lambda: _nothing_left(empty_nats_url, job["id"]), timeout=TTL + 5)
        left = await leftovers(empty_nats_url, job["id"])
    assert done["status"] == "succeeded"
    # Its story told, its upload and the frame read from it are kept for another take;
    # the record, the events and those stay till expiry.
    assert kept["record"] == 1 and kept["events"] > 0 and kept["media"] == 2, kept
    assert left == {"record": 0, "events": 0, "work": 0, "media": 0}, left
