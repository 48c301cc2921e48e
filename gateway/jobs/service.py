"""Jobs as the HTTP side sees them: submit, read, list, cancel, delete, wait, sweep.

The HTTP side only reads and writes the store; the work itself is on the queue, where
any gateway's workers take it. Everything a job owns (its record, its events, its
stored uploads) is named by its id, so deleting or sweeping it leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.object_store import ObjectStore

from bus import blobs, tracing
from bus.job_keys import JobKeys, KeyClaim
from bus.jobs import JobConflict, JobNotFound, JobStore, Versioned
from bus.rpc import BusUnavailable
from contracts.messages import JobError, JobEvent, JobRecord, JobStatus, JobUpload, RunJob
from contracts.subjects import job_cancel_subject, job_events_subject, job_live_subject
from gateway.cleanup import JOBS_MEDIA_PREFIX
from gateway.config import Jobs
from gateway.jobs.deliveries import pending_webhook, request_delivery
from gateway.jobs.worker import JobFailed, status_event, tell
from gateway.uploads import ReceivedForm

log = logging.getLogger(__name__)

_events = msgspec.msgpack.Decoder(JobEvent)
_status = msgspec.json.Decoder(dict[str, object])
_SUBMITTER_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# How often a synchronous caller reads the record, besides hearing the job's events:
# an event missed while the connection to NATS was re-established is not waited for.
_RECHECK_SECONDS = 5.0
# Uploads a gateway copies into the bucket at once; the other submissions wait their turn
# with their upload on disk. Each store holds a few copies of a 256 kB chunk: 500
# submissions at once took the gateway from 90 MiB to 599 MiB unbounded, to 165 MiB
# with 8 (2: 182, 16: 185), and submitted faster (p50 1.4 s against 1.8 s; bench.jobs).
STORES_AT_ONCE = 8


class QueueFull(Exception):
    """Too many jobs wait already (in all, or the caller's): the message is for the client."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class JobFinished(Exception):
    """The job has ended already: it cannot be cancelled (409)."""


class KeyReused(Exception):
    """An Idempotency-Key came again with a different request (422)."""


class KeyInUse(Exception):
    """An Idempotency-Key's first request is still making its job (409)."""


@dataclass(frozen=True)
class Submitter:
    """Who submits: the owner a job is kept for (None with keys off), and whose queue."""

    owner: str | None
    queue: str

    @classmethod
    def of(cls, caller: str | None, keys_on: bool) -> Submitter:
        token = _SUBMITTER_UNSAFE.sub("_", caller or "anyone")[:64] or "anyone"
        return cls(owner=caller if keys_on else None, queue=token)


_JOB_ID = re.compile(r"job_[0-9a-f]{32}")


def new_job_id() -> str:
    """128 random bits, URL- and subject-safe."""
    return "job_" + secrets.token_hex(16)


def media_name(job_id: str, index: int) -> str:
    """A job's stored upload: named under ``jobs/`` so per-request sweeps leave it alone."""
    return f"{JOBS_MEDIA_PREFIX}{job_id}/upload-{index}"


class JobService:
    def __init__(
        self,
        nc: Client,
        store: JobStore,
        keys: JobKeys,
        media: ObjectStore,
        settings: Jobs,
        on_ended: Callable[[str], None] | None = None,
    ) -> None:
        self.on_ended = on_ended
        self.nc = nc
        self.store = store
        self.keys = keys
        self.media = media
        self.settings = settings
        self._discarding: set[asyncio.Future[None]] = set()
        self._storing = asyncio.Semaphore(STORES_AT_ONCE)

    async def submit(
        self,
        form: ReceivedForm,
        submitter: Submitter,
        *,
        keep: bool = True,
        watched: bool = False,
        request_id: str | None = None,
        webhook_url: str | None = None,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Versioned:
        """Store the uploads and the job, then queue it; returns the queued job.

        A kept job's uploads go to the bucket (they outlive the work); an unkept one's
        small uploads ride the queue message. ``job_id`` is a new one unless given (a
        caller that listens to the job before it runs). Raises QueueFull (nothing
        stored) and, when the bucket or the bus fails, their errors (nothing left behind).
        """
        if not self.nc.is_connected:
            raise BusUnavailable()  # at once, rather than after the bucket's time-outs
        await self._admit(submitter)
        job_id = job_id or new_job_id()
        now = time.time()
        budget = 0 if keep else min(self.settings.inline_bytes, self.nc.max_payload // 2)
        uploads: list[JobUpload] = []
        stored: list[str] = []
        try:
            for index, received in enumerate(form.files):
                name = media_name(job_id, index)
                if received.size <= budget:
                    budget -= received.size
                    data = received.path.read_bytes()
                    uploads.append(JobUpload(name=name, size=received.size, data=data))
                else:
                    stored.append(name)
                    async with self._storing:
                        await blobs.put_file(self.media, name, received.path)
                    uploads.append(JobUpload(name=name, size=received.size))
                received.path.unlink(missing_ok=True)  # in the bucket or in memory now
            record = JobRecord(
                id=job_id,
                status=JobStatus.QUEUED,
                created_at=now,
                expires_at=now + self.settings.ttl,
                kind=form.kind,
                uploads=[
                    JobUpload(name=u.name, size=u.size, stored=u.data is None) for u in uploads
                ],
                owner=submitter.owner,
                prompt=form.prompt,
                keep=keep,
                watched=watched,
                request_id=request_id,
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
                trace=tracing.with_context({}) or {},
            )
            created = await self.store.create(record)
        except BaseException:
            await blobs.delete_quietly(self.media, stored)
            with contextlib.suppress(NatsError, blobs.BlobsUnavailable, JobNotFound):
                await self.store.delete(job_id)  # a create that went through unanswered
            raise
        try:
            await tell(self.nc, self.store, record, status_event(record))
            await self.store.enqueue(RunJob(job_id=job_id, uploads=uploads), submitter.queue)
        except BaseException:
            await self._remove(record)
            raise
        return created

    async def submit_once(
        self,
        form: ReceivedForm,
        submitter: Submitter,
        key: str,
        fingerprint: str,
        *,
        request_id: str | None = None,
        webhook_url: str | None = None,
    ) -> tuple[Versioned, bool]:
        """``submit``, once per ``key`` of this submitter: the same key with the same
        request answers the job it made (and False: nothing new was done).

        Raises KeyReused when the key came with another request, KeyInUse when its
        first request has not made its job yet, and as ``submit`` does.
        """
        name = f"{submitter.queue}.{hashlib.sha256(key.encode()).hexdigest()}"
        job_id = new_job_id()
        held = await self.keys.claim(name, KeyClaim(job_id=job_id, fingerprint=fingerprint))
        if held is None:
            try:
                job = await self.submit(
                    form,
                    submitter,
                    request_id=request_id,
                    webhook_url=webhook_url,
                    job_id=job_id,
                    idempotency_key=name,
                )
            except BaseException:
                await self.keys.forget(name)
                raise
            return job, True
        if held.fingerprint != fingerprint:
            raise KeyReused("this Idempotency-Key was sent before with another request")
        for _ in range(20):  # the first request may be storing its uploads still
            with contextlib.suppress(JobNotFound):
                return await self.get(held.job_id, submitter.owner), False
            await asyncio.sleep(0.1)
        raise KeyInUse("a request with this Idempotency-Key is still being accepted; retry")

    async def _admit(self, submitter: Submitter) -> None:
        limits = self.settings
        if not (limits.max_queued or limits.max_queued_per_key):
            return
        overall, mine = await self.store.unfinished(submitter.queue)
        if limits.max_queued_per_key and mine >= limits.max_queued_per_key:
            raise QueueFull(
                f"this caller already has {mine} jobs queued or running; wait for one to end",
                retry_after=10,
            )
        if limits.max_queued and overall >= limits.max_queued:
            raise QueueFull(
                "the queue is full; try again shortly",
                retry_after=10,
            )

    async def get(self, job_id: str, owner: str | None) -> Versioned:
        """The job as it is now. Raises JobNotFound when it does not exist, has expired
        or belongs to another key (whose existence is not revealed)."""
        if not _JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)  # never a key the bucket would refuse to look up
        current = await self.store.get(job_id)
        record = current.record
        if record.owner != owner or record.expires_at <= time.time():
            raise JobNotFound(job_id)
        return current

    async def cancel(self, job_id: str, owner: str | None) -> Versioned:
        """Cancel the job: idempotent; raises JobFinished once it ended otherwise.

        The replica running it hears at once and stops its model calls; the stored
        uploads are removed.
        """
        while True:
            current = await self.get(job_id, owner)
            record = current.record
            if record.status is JobStatus.CANCELED:
                return current
            if record.status.finished:
                raise JobFinished(f"the job has {record.status.value} already")
            try:
                canceled = await self.store.update(
                    current,
                    status=JobStatus.CANCELED,
                    finished_at=time.time(),
                    stage=None,
                    webhook=pending_webhook(record),
                )
            except JobConflict:
                continue  # it moved on meanwhile: look again
            break
        if self.on_ended is not None:
            self.on_ended(canceled.record.status.value)
        with contextlib.suppress(NatsError):
            await self.nc.publish(job_cancel_subject(job_id), b"")
        await tell(self.nc, self.store, canceled.record, status_event(canceled.record))
        await blobs.delete_quietly(self.media, _stored(canceled.record))
        await request_delivery(self.store, job_id, canceled.record)
        return canceled

    async def delete(self, job_id: str, owner: str | None) -> None:
        """Remove the job now: cancelled first if unfinished, then record, events, media."""
        current = await self.get(job_id, owner)
        if not current.record.status.finished:
            with contextlib.suppress(JobFinished):
                await self.cancel(job_id, owner)
        await self._remove(current.record)

    async def release(self, record: JobRecord) -> None:
        """Remove an ended job's stored uploads: its story is told, nothing reads them."""
        await blobs.delete_quietly(self.media, _stored(record))

    async def _remove(self, record: JobRecord) -> None:
        await blobs.delete_quietly(self.media, _stored(record))
        if record.idempotency_key is not None:
            await self.keys.forget(record.idempotency_key)
        await self.store.delete(record.id, events=record.keep)

    async def owned(self, owner: str) -> list[JobRecord]:
        """The owner's live kept jobs, newest first (a synchronous request's own job,
        removed once it answers, is not one to list)."""
        now = time.time()
        records = []
        for job_id in await self.store.job_ids():
            with contextlib.suppress(JobNotFound):
                record = (await self.store.get(job_id)).record
                if record.owner == owner and record.keep and record.expires_at > now:
                    records.append(record)
        records.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return records

    async def sweep(self) -> int:
        """Remove every expired job with what it owns; returns how many."""
        now = time.time()
        swept = 0
        for job_id in await self.store.job_ids():
            try:
                record = (await self.store.get(job_id)).record
            except JobNotFound:
                continue
            if record.expires_at <= now:
                await self._remove(record)
                swept += 1
        if swept:
            log.info("swept %d expired job(s)", swept)
        return swept

    async def start(
        self,
        form: ReceivedForm,
        submitter: Submitter,
        request_id: str,
        on_event: Callable[[JobEvent], None] | None = None,
        keep: bool = False,
    ) -> AwaitedJob:
        """Submit a job for a caller that waits for it (``/analyze/``), heard from
        before it runs; unless ``keep``, it is removed once the wait ends. Raises as
        ``submit`` does."""
        if not self.nc.is_connected:
            raise BusUnavailable()
        job_id = new_job_id()
        follower = Follower(self.nc, on_event)
        await follower.follow(job_id, keep)
        watched = on_event is not None
        try:
            await self.submit(
                form, submitter, keep=keep, watched=watched, request_id=request_id, job_id=job_id
            )
        except BaseException:
            await follower.close()
            raise
        return AwaitedJob(self, job_id, follower, keep)

    async def outcome(self, job_id: str, heard: asyncio.Event) -> JobRecord:
        """Wait until the job ends; ``heard`` is set by whoever hears its events."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), _RECHECK_SECONDS)
            heard.clear()
            record = (await self.store.get(job_id)).record
            if record.status.finished:
                return record

    def discard_soon(self, job_id: str, ended: JobRecord | None = None) -> None:
        """Cancel the job if it still runs and remove it, whatever befalls the caller;
        ``ended`` is its record when it is known to have ended (nothing to read again)."""
        task = asyncio.ensure_future(self._discard(job_id, ended))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def _discard(self, job_id: str, ended: JobRecord | None) -> None:
        try:
            if ended is not None:
                await self._remove(ended)
            else:
                await self.delete(job_id, (await self.store.get(job_id)).record.owner)
        except JobNotFound:
            pass
        except (NatsError, blobs.BlobsUnavailable) as err:
            log.warning("job %s: not removed now (%s); its expiry will", job_id, err)

    async def close(self) -> None:
        """Finish removing the jobs whose callers are done with them."""
        await asyncio.gather(*self._discarding, return_exceptions=True)


def _stored(record: JobRecord) -> list[str]:
    return [upload.name for upload in record.uploads if upload.stored]


class AwaitedJob:
    """A job and the caller waiting for it; unless kept, removed once the wait ends."""

    def __init__(
        self, service: JobService, job_id: str, follower: Follower, keep: bool = False
    ) -> None:
        self.service = service
        self.job_id = job_id
        self.follower = follower
        self.keep = keep

    async def result(self) -> bytes:
        """The answer's JSON. Raises JobFailed with what the job ended with (canceled:
        503). Unless kept, the job is removed either way, cancelled first when this wait
        is (its caller left); a kept job runs on and stays for GET /jobs/{id}."""
        record: JobRecord | None = None
        try:
            record = await self.service.outcome(self.job_id, self.follower.ended)
        finally:
            await self.follower.close()
            if not self.keep:
                self.service.discard_soon(self.job_id, record)
        if record.result is not None:
            return record.result
        error = record.error or JobError(status=503, detail="the job was canceled")
        raise JobFailed(error.status, error.detail, error.retry_after)


class Follower:
    """A synchronous caller's ear on one job: its events as they are published.

    A core NATS subscription hears each event as it is published, without a consumer:
    a kept job's on the subject its events are stored under, an unkept job's on the
    subject they are only told on. ``ended`` is set when a status event says the job
    is over (the record is then read for the outcome).
    """

    def __init__(self, nc: Client, on_event: Callable[[JobEvent], None] | None = None) -> None:
        self.nc = nc
        self.on_event = on_event
        self.ended = asyncio.Event()
        self._subscription: Subscription | None = None

    async def follow(self, job_id: str, kept: bool) -> None:
        subject = job_events_subject(job_id) if kept else job_live_subject(job_id)
        self._subscription = await self.nc.subscribe(subject, cb=self._heard)

    async def _heard(self, msg: Msg) -> None:
        try:
            event = _events.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if self.on_event is not None:
            self.on_event(event)
        if event.name == "status":
            status = _status.decode(event.data).get("status")
            if status in {s.value for s in JobStatus if s.finished}:
                self.ended.set()

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
