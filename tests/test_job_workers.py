"""Job workers on a real NATS: claim, outcome, cancel, redelivery and the attempts bound."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.aio.client import Client

from bus.jobs import JobStore, Versioned
from contracts.messages import (
    JobEvent,
    JobRecord,
    JobStatus,
    JobUpload,
    MediaKind,
    RunJob,
    Stage,
)
from contracts.subjects import job_cancel_subject
from gateway.jobs.worker import JobFailed, JobRun, Workers, WorkerSettings


async def _submit(job_store: JobStore, job_id: str = "job-1") -> None:
    now = time.time()
    record = JobRecord(
        id=job_id,
        status=JobStatus.QUEUED,
        created_at=now,
        expires_at=now + 3600,
        kind=MediaKind.IMAGE,
        uploads=[JobUpload(name="u", size=3, stored=False)],
    )
    await job_store.create(record)
    await job_store.enqueue(
        RunJob(job_id=job_id, uploads=[JobUpload(name="u", size=3, data=b"abc")])
    )


async def _until(job_store: JobStore, job_id: str, *states: JobStatus) -> Versioned:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        current = await job_store.get(job_id)
        if current.record.status in states:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {current.record.status}")


async def _events(job_store: JobStore, job_id: str) -> list[JobEvent]:
    seen: list[JobEvent] = []

    async def read() -> None:
        async for heard in job_store.events(job_id):
            if heard is not None:
                seen.append(heard[1])

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read(), 0.5)
    return seen


async def test_a_job_runs_once_and_its_result_is_recorded(
    job_nc: Client, job_store: JobStore
) -> None:
    calls: list[tuple[str, list[JobUpload]]] = []

    async def runner(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        calls.append((record.id, uploads))
        await job.stage(Stage.WRITING_STORY)
        job.event(JobEvent(name="story", data=b'{"text":"Once"}'))
        return b'{"english":"Once"}'

    workers = Workers(job_nc, job_store, runner, WorkerSettings(workers=2))
    await workers.start()
    try:
        await _submit(job_store)
        done = await _until(job_store, "job-1", JobStatus.SUCCEEDED)
    finally:
        await workers.close()
    assert calls == [("job-1", [JobUpload(name="u", size=3, data=b"abc")])]
    assert done.record.result == b'{"english":"Once"}'
    assert done.record.attempts == 1
    assert done.record.finished_at is not None and done.record.started_at is not None
    events = await _events(job_store, "job-1")
    assert [(e.name, e.data) for e in events] == [
        ("status", b'{"status":"running","attempts":1}'),
        ("story", b'{"text":"Once"}'),
        ("result", b'{"english":"Once"}'),
        ("status", b'{"status":"succeeded","attempts":1}'),
    ]
    assert await job_store.queued() == 0


async def test_a_failure_is_recorded_with_its_status(job_nc: Client, job_store: JobStore) -> None:
    async def runner(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        raise JobFailed(422, "the video has no video stream")

    workers = Workers(job_nc, job_store, runner, WorkerSettings(workers=1))
    await workers.start()
    try:
        await _submit(job_store)
        failed = await _until(job_store, "job-1", JobStatus.FAILED)
    finally:
        await workers.close()
    assert failed.record.error is not None
    assert (failed.record.error.status, failed.record.error.detail) == (
        422,
        "the video has no video stream",
    )


async def test_cancel_stops_the_running_job_and_keeps_it_canceled(
    job_nc: Client, job_store: JobStore
) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def runner(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return b"{}"

    workers = Workers(job_nc, job_store, runner, WorkerSettings(workers=1))
    await workers.start()
    try:
        await _submit(job_store)
        await asyncio.wait_for(started.wait(), 10)
        running = await job_store.get("job-1")
        await job_store.update(running, status=JobStatus.CANCELED, finished_at=time.time())
        await job_nc.publish(job_cancel_subject("job-1"), b"")
        await asyncio.wait_for(stopped.wait(), 5)
        await asyncio.sleep(0.3)
        assert (await job_store.get("job-1")).record.status is JobStatus.CANCELED
        assert workers.running == 0
    finally:
        await workers.close()
    assert await job_store.queued() == 0


async def test_a_job_whose_worker_went_away_runs_again_elsewhere(
    job_nc: Client, job_store: JobStore
) -> None:
    first_started = asyncio.Event()
    attempts: list[int] = []

    async def stuck(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        attempts.append(record.attempts)
        first_started.set()
        await asyncio.sleep(60)
        return b"{}"

    async def quick(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        attempts.append(record.attempts)
        return b'{"english":"again"}'

    first = Workers(job_nc, job_store, stuck, WorkerSettings(workers=1, name="first"))
    await first.start()
    await _submit(job_store)
    await asyncio.wait_for(first_started.wait(), 10)
    await first.close()  # stops without an ack, as a killed process would
    second = Workers(job_nc, job_store, quick, WorkerSettings(workers=1, name="second"))
    await second.start()
    try:
        done = await _until(job_store, "job-1", JobStatus.SUCCEEDED)
    finally:
        await second.close()
    assert attempts == [1, 2]
    assert (done.record.attempts, done.record.worker) == (2, "second")


async def test_the_last_attempt_lost_ends_the_job_failed(
    job_nc: Client, job_store: JobStore
) -> None:
    async def stuck(record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        await asyncio.sleep(60)
        return b"{}"

    settings = WorkerSettings(workers=1, max_attempts=1)
    first = Workers(job_nc, job_store, stuck, settings)
    await first.start()
    await _submit(job_store)
    await _until(job_store, "job-1", JobStatus.RUNNING)
    await first.close()
    second = Workers(job_nc, job_store, stuck, settings)
    await second.start()
    try:
        failed = await _until(job_store, "job-1", JobStatus.FAILED)
    finally:
        await second.close()
    assert failed.record.error is not None
    assert failed.record.error.status == 503
    assert "interrupted" in failed.record.error.detail
    assert msgspec.json.decode((await _events(job_store, "job-1"))[-1].data)["status"] == "failed"
