"""The jobs' JetStream parts on a real server: compare-and-set, the work queue, events."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client

from bus.jobs import JobConflict, JobNotFound, JobStore
from contracts.messages import (
    JobEvent,
    JobRecord,
    JobStatus,
    JobUpload,
    MediaKind,
    RunJob,
)
from contracts.subjects import JOB_EVENTS_STREAM, JOBS_BUCKET, job_events_subject


def _record(job_id: str = "job-1") -> JobRecord:
    now = time.time()
    return JobRecord(
        id=job_id,
        status=JobStatus.QUEUED,
        created_at=now,
        expires_at=now + 3600,
        kind=MediaKind.IMAGE,
        uploads=[JobUpload(name=f"jobs/{job_id}/upload-0", size=10)],
    )


async def test_a_second_writer_from_the_same_revision_loses(job_store: JobStore) -> None:
    created = await job_store.create(_record())
    first = await job_store.update(created, status=JobStatus.RUNNING, attempts=1, worker="a")
    with pytest.raises(JobConflict):
        await job_store.update(created, status=JobStatus.RUNNING, attempts=1, worker="b")
    now = await job_store.get("job-1")
    assert now.record.worker == "a"
    assert now.revision == first.revision


async def test_an_id_is_created_once(job_store: JobStore) -> None:
    await job_store.create(_record())
    with pytest.raises(JobConflict):
        await job_store.create(_record())


async def test_a_deleted_job_is_not_found_and_its_events_are_gone(
    job_store: JobStore, job_nc: Client
) -> None:
    await job_store.create(_record())
    await job_store.publish("job-1", JobEvent(name="status", data=b'{"status":"queued"}'))
    await job_store.delete("job-1")
    with pytest.raises(JobNotFound):
        await job_store.get("job-1")
    events = await job_nc.jetstream().stream_info(
        JOB_EVENTS_STREAM, subjects_filter=job_events_subject("job-1")
    )
    assert events.state.messages == 0
    bucket = await job_nc.jetstream().stream_info(f"KV_{JOBS_BUCKET}")
    assert bucket.state.messages == 0
    assert await job_store.job_ids() == []


async def test_work_queued_twice_is_delivered_once(job_store: JobStore) -> None:
    await job_store.enqueue(RunJob(job_id="job-1"))
    await job_store.enqueue(RunJob(job_id="job-1"))
    assert await job_store.queued() == 1
    work = await job_store.work()
    [msg] = await work.fetch(1, timeout=2)
    await msg.ack_sync()
    assert await job_store.queued() == 0


async def test_work_a_silent_worker_held_is_delivered_again(job_store: JobStore) -> None:
    await job_store.enqueue(RunJob(job_id="job-1"))
    work = await job_store.work()
    [first] = await work.fetch(1, timeout=2)
    assert first.metadata.num_delivered == 1
    # No ack and no progress: after ack_wait (1 s here) another worker gets it.
    [again] = await work.fetch(1, timeout=5)
    assert again.data == first.data
    assert again.metadata.num_delivered == 2
    await again.ack_sync()


async def test_progress_acks_keep_work_with_its_worker(job_store: JobStore) -> None:
    await job_store.enqueue(RunJob(job_id="job-1"))
    work = await job_store.work()
    [msg] = await work.fetch(1, timeout=2)
    for _ in range(4):  # twice the ack wait in all
        await asyncio.sleep(0.5)
        await msg.in_progress()
    with pytest.raises(TimeoutError):
        await work.fetch(1, timeout=0.5)
    await msg.ack_sync()
    await work.unsubscribe()


async def test_events_resume_after_the_last_one_seen(job_store: JobStore) -> None:
    numbers = [
        await job_store.publish("job-1", JobEvent(name="stage", data=str(i).encode()))
        for i in range(3)
    ]
    await job_store.publish("job-2", JobEvent(name="stage", data=b"other job"))

    async def read(after: int, count: int) -> list[tuple[int, bytes]]:
        seen = []
        async for heard in job_store.events("job-1", after=after):
            assert heard is not None
            number, event = heard
            seen.append((number, event.data))
            if len(seen) == count:
                break
        return seen

    assert await read(0, 3) == list(zip(numbers, [b"0", b"1", b"2"], strict=True))
    assert await read(numbers[0], 2) == list(zip(numbers[1:], [b"1", b"2"], strict=True))
    # A reader that caught up waits for the next event.
    follower = asyncio.ensure_future(read(numbers[2], 1))
    await asyncio.sleep(0.2)
    assert not follower.done()
    later = await job_store.publish("job-1", JobEvent(name="result", data=b"{}"))
    assert await asyncio.wait_for(follower, 5) == [(later, b"{}")]
