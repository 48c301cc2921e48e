"""A gateway replica's job workers: take work from the queue, run it, record the outcome.

The queue owns the work, not this process: a worker claims a job by compare-and-set
(``queued`` or an earlier attempt's ``running`` → ``running``, one more attempt), keeps
the queue's message alive with progress acks while the job runs, and acks it only once
the outcome is written. A worker whose write fails has lost the job (it was cancelled,
or taken over after this worker went silent): it stops and writes nothing more. A job
delivered more than ``max_attempts`` times ends ``failed``, never stranded ``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext

from bus.blobs import BlobsUnavailable, through_elections
from bus.jobs import JobConflict, JobNotFound, JobStore, Versioned
from contracts.messages import (
    Frame,
    JobError,
    JobEvent,
    JobRecord,
    JobStatus,
    JobUpload,
    RunJob,
    Stage,
    VideoInfo,
)
from contracts.subjects import job_cancel_subject, job_live_subject
from gateway.jobs.deliveries import pending_webhook, request_delivery
from gateway.jobs.loops import stopped

log = logging.getLogger(__name__)

_runs = msgspec.msgpack.Decoder(RunJob)
# Seconds before an interrupted job is delivered again: the bus is usually back by then.
RETRY_DELAY = 1.0
_json = msgspec.json.Encoder()
_encoder = msgspec.msgpack.Encoder()


class JobFailed(Exception):
    """The job cannot succeed: recorded as its ``error`` (the synchronous call's answer)."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.error = JobError(status=status, detail=detail, retry_after=retry_after)


class JobInterrupted(JobFailed):
    """The job could not go on for the system's fault, not its own (the bus was down):
    handed back to the queue for another attempt; its ``error`` only if none is left."""


EventSink = Callable[[JobEvent], None]
# Runs one job: its record, its uploads (with the bytes of those not stored) and where
# its events go; returns the result's JSON, raises JobFailed (or is cancelled).
Runner = Callable[[JobRecord, list[JobUpload], "JobRun"], Awaitable[bytes]]


def _nobody(status: str) -> None:
    """Told of each outcome a worker writes, when nobody counts them."""


async def _nothing_to_release(record: JobRecord) -> None:
    """What an ended job held that nobody needs any more, when nothing is to be freed."""


Release = Callable[[JobRecord], Awaitable[None]]


@dataclass(frozen=True)
class WorkerSettings:
    workers: int = 2  # jobs this replica runs at once
    max_attempts: int = 3  # deliveries in all; the last one failing ends the job failed
    name: str = "gateway"
    on_ended: Callable[[str], None] = _nobody  # the outcome a worker wrote (for /metrics)


def status_event(record: JobRecord) -> JobEvent:
    """The ``status`` event every change of a job's status publishes."""
    body = {"status": record.status.value, "attempts": record.attempts}
    return JobEvent(name="status", data=_json.encode(body))


async def tell(nc: Client, store: JobStore, record: JobRecord, event: JobEvent) -> None:
    """Publish one of the job's events. A kept job's is stored, to be read (and resumed)
    later; an unkept job's is only told to its caller, who listens as it happens: its
    record and events are removed once the caller has the answer, so storing them would
    be work nobody reads (a synchronous request paid 11 ms for it at p50)."""
    if record.keep:
        await store.publish(record.id, event)
    else:
        await nc.publish(job_live_subject(record.id), _encoder.encode(event))


class JobRun:
    """One claimed job while it runs: its latest revision and the stage changes it writes."""

    def __init__(
        self,
        nc: Client,
        store: JobStore,
        claimed: Versioned,
        on_ended: Callable[[str], None] = _nobody,
        release: Release = _nothing_to_release,
    ) -> None:
        self.nc = nc
        self.store = store
        self.on_ended = on_ended
        self.release = release
        self.current = claimed
        self.stopped = False  # set when the job was cancelled or lost, not this worker
        self.task: asyncio.Future[bytes] | None = None  # the run, stopped when it is lost
        self._published: list[asyncio.Task[None]] = []
        self._stage_written: asyncio.Future[None] | None = None

    @property
    def job_id(self) -> str:
        return self.current.record.id

    def event(self, event: JobEvent) -> None:
        """Publish one event; in order, without holding up the job."""
        previous = self._published[-1] if self._published else None
        self._published.append(asyncio.ensure_future(self._publish_after(previous, event)))

    async def _publish_after(self, previous: asyncio.Task[None] | None, event: JobEvent) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):  # its failure is logged where it happened
                await previous
        try:
            await tell(self.nc, self.store, self.current.record, event)
        except Exception:
            log.warning("job %s: its %s event was lost", self.job_id, event.name, exc_info=True)
            raise

    async def flushed(self) -> None:
        """Wait until every event so far is stored."""
        await asyncio.gather(*self._published, return_exceptions=True)
        self._published.clear()

    async def stage(self, stage: Stage) -> None:
        """Record the stage the job is in. Raises JobConflict when the job was lost."""
        self.current = await self.store.update(self.current, stage=stage)

    def stage_soon(self, stage: Stage) -> None:
        """Record the stage in order, without holding up the job; a job found lost stops.
        An unkept job's stage is not recorded: only its caller follows it, by its events."""
        if self.current.record.keep:
            self._write_soon("stage", stage=stage)

    def frames_soon(self, frames: list[Frame], video: VideoInfo | None) -> None:
        """Record the frames the frame stage kept, in order with the stages."""
        self._write_soon("frames", frames=frames, video=video)

    def _write_soon(self, what: str, **changes: object) -> None:
        previous = self._stage_written
        self._stage_written = asyncio.ensure_future(self._write_after(previous, what, changes))

    async def _write_after(
        self, previous: asyncio.Future[None] | None, what: str, changes: dict[str, object]
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if self.stopped:
            return
        try:
            self.current = await self.store.update(self.current, **changes)
        except (JobConflict, JobNotFound):
            self.lost()
        except NatsError as err:
            log.warning("job %s: its %s was not recorded (%s)", self.job_id, what, err)

    def lost(self) -> None:
        """The job is no longer this worker's (cancelled, deleted or taken over): stop."""
        self.stopped = True
        if self.task is not None:
            self.task.cancel()

    async def finish(self, **changes: object) -> Versioned:
        """Write the outcome, after its result or error event and every event before.
        Raises JobConflict when the job was lost meanwhile."""
        if self._stage_written is not None:
            await asyncio.gather(self._stage_written, return_exceptions=True)
        if self.stopped:
            raise JobConflict(f"job {self.job_id} was lost")
        await self.flushed()
        webhook = pending_webhook(self.current.record)
        self.current = await self.store.update(
            self.current, finished_at=time.time(), webhook=webhook, **changes
        )
        record = self.current.record
        self.on_ended(record.status.value)
        if record.result is not None:
            self.event(JobEvent(name="result", data=record.result))
        elif record.error is not None:
            error = {
                "status": record.error.status,
                "detail": record.error.detail,
                "request_id": record.request_id or record.id,
            }
            self.event(JobEvent(name="error", data=_json.encode(error)))
        self.event(status_event(record))
        await self.flushed()
        await self.release(record)
        await request_delivery(self.store, self.job_id, record)
        return self.current


class Workers:
    """Runs up to ``settings.workers`` jobs at once, taken from the shared work queue."""

    def __init__(
        self,
        nc: Client,
        store: JobStore,
        runner: Runner,
        settings: WorkerSettings,
        release: Release = _nothing_to_release,
    ) -> None:
        self.release = release  # frees what a job held once its outcome is written
        self.nc = nc
        self.store = store
        self.runner = runner
        self.settings = settings
        self._fetcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._work: JetStreamContext.PullSubscription | None = None
        self._taken: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        if self.settings.workers == 0:
            return  # a pure front door
        self._work = await self.store.work()
        self._fetcher = asyncio.create_task(self._fetch_forever(self._work))

    async def close(self, grace: float = 0.0) -> None:
        """Stop taking work; let running jobs finish for up to ``grace`` seconds, then
        hand the rest back to the queue, which gives them to another replica at once."""
        if self._fetcher is not None:
            await stopped(self._fetcher, self._stopping)
        if self._taken and grace > 0:
            await asyncio.wait(list(self._taken), timeout=grace)
        for task in list(self._taken):
            task.cancel()
        await asyncio.gather(*self._taken, return_exceptions=True)
        if self._work is not None:
            with contextlib.suppress(NatsError):
                await self._work.unsubscribe()

    @property
    def running(self) -> int:
        return len(self._running)

    async def _fetch_forever(self, work: JetStreamContext.PullSubscription) -> None:
        slots = asyncio.Semaphore(self.settings.workers)
        while not self._stopping.is_set():
            await slots.acquire()
            try:
                batch = await work.fetch(1, timeout=5)
            except TimeoutError:
                slots.release()
                continue
            except NatsError as err:
                slots.release()
                log.warning("the job queue did not answer (%s); trying again", err)
                await asyncio.sleep(1)
                continue
            for msg in batch:
                task = asyncio.create_task(self._take(msg))
                self._taken.add(task)
                task.add_done_callback(self._taken.discard)
                task.add_done_callback(lambda _: slots.release())

    async def _take(self, msg: Msg) -> None:
        try:
            run = _runs.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error("an unreadable job message was dropped")
            await msg.term()
            return
        try:
            await self._run(msg, run)
        except asyncio.CancelledError:
            # This replica is stopping: the job goes back to the queue for another.
            with contextlib.suppress(NatsError):
                await asyncio.shield(msg.nak())
            raise
        except JobInterrupted as interruption:
            log.warning("job %s: interrupted (%s); back to the queue", run.job_id, interruption)
            with contextlib.suppress(NatsError):  # unacked, it comes back after the lease
                await msg.nak(delay=RETRY_DELAY)
            return
        except JobConflict:
            log.info("job %s: lost to another writer; this worker stops", run.job_id)
        except JobNotFound:
            log.info("job %s: deleted while it ran", run.job_id)
        # The outcome is written (or the job is someone else's, or gone): done with it.
        # Acked through an election of the queue's leader: else the work would stay on
        # the queue, counted as unfinished, until its lease ran out.
        with contextlib.suppress(NatsError, BlobsUnavailable):
            await through_elections(msg.ack_sync, f"acking job {run.job_id}")

    async def _run(self, msg: Msg, run: RunJob) -> None:
        claimed = await self._claim(msg, run.job_id)
        if claimed is None:
            return
        log.info("job %s: attempt %d runs here", run.job_id, claimed.record.attempts)
        job = JobRun(self.nc, self.store, claimed, self.settings.on_ended, self.release)
        job.event(status_event(claimed.record))
        task = asyncio.ensure_future(self.runner(claimed.record, run.uploads, job))
        job.task = task
        self._running[run.job_id] = task

        async def on_cancel(_: Msg) -> None:
            job.lost()

        cancels = await self.nc.subscribe(job_cancel_subject(run.job_id), cb=on_cancel)
        keeper = asyncio.create_task(self._keep(msg, job, task))
        try:
            result = await task
        except JobInterrupted as interruption:
            if (msg.metadata.num_delivered or 1) < self.settings.max_attempts:
                job.lost()  # this attempt writes nothing more; the next one takes over
                raise
            await job.finish(status=JobStatus.FAILED, error=interruption.error, stage=None)
            return
        except JobFailed as failure:
            await job.finish(status=JobStatus.FAILED, error=failure.error, stage=None)
            return
        except asyncio.CancelledError:
            if not job.stopped:
                raise  # this worker itself is stopping: the queue delivers the job again
            return  # cancelled through the API, or lost: the record says so already
        except Exception:
            # A bug, not the job's fault: it ends failed rather than running for ever.
            log.exception("job %s failed unexpectedly", run.job_id)
            error = JobError(status=500, detail="internal server error")
            await job.finish(status=JobStatus.FAILED, error=error, stage=None)
            return
        finally:
            self._running.pop(run.job_id, None)
            keeper.cancel()
            with contextlib.suppress(NatsError):
                await cancels.unsubscribe()
        await job.finish(status=JobStatus.SUCCEEDED, result=result, stage=None)

    async def _claim(self, msg: Msg, job_id: str) -> Versioned | None:
        """The job, now ``running`` as this worker's; None when there is nothing to run."""
        while True:
            current = await self.store.get(job_id)
            record = current.record
            if record.status.finished:
                # Cancelled while queued, or done before a redelivery (whose webhook
                # may not have been queued yet: asking again is harmless).
                await request_delivery(self.store, job_id, record)
                return None
            delivered = msg.metadata.num_delivered or 1
            try:
                if delivered > self.settings.max_attempts:
                    detail = f"the job was interrupted {delivered - 1} times; try again later"
                    failed = await self.store.update(
                        current,
                        status=JobStatus.FAILED,
                        finished_at=time.time(),
                        error=JobError(status=503, detail=detail),
                        webhook=pending_webhook(record),
                    )
                    self.settings.on_ended(failed.record.status.value)
                    error = {
                        "status": 503,
                        "detail": detail,
                        "request_id": record.request_id or job_id,
                    }
                    error_event = JobEvent(name="error", data=_json.encode(error))
                    await tell(self.nc, self.store, failed.record, error_event)
                    await tell(self.nc, self.store, failed.record, status_event(failed.record))
                    await self.release(failed.record)
                    await request_delivery(self.store, job_id, record)
                    return None
                return await self.store.update(
                    current,
                    status=JobStatus.RUNNING,
                    attempts=record.attempts + 1,
                    started_at=record.started_at or time.time(),
                    worker=self.settings.name,
                )
            except JobConflict:
                continue  # cancelled or claimed meanwhile: look again

    async def _keep(self, msg: Msg, job: JobRun, task: asyncio.Future[bytes]) -> None:
        """Tell the queue the job is alive, and stop it once it is no longer ours."""
        interval = self.store.config.ack_wait / 3
        while not task.done():
            await asyncio.sleep(interval)
            with contextlib.suppress(NatsError):
                await msg.in_progress()
            try:
                now = (await self.store.get(job.job_id)).record
            except JobNotFound:
                now = None
            except NatsError:
                continue
            mine = job.current.record
            if now is None or (now.status, now.attempts) != (JobStatus.RUNNING, mine.attempts):
                job.lost()  # deleted, cancelled, or taken over while this worker was silent
                return
