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
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import ObjectNotFoundError

from bus import blobs, tracing
from bus.blobs import BlobStore
from bus.job_keys import JobKeys, KeyClaim
from bus.jobs import JobConflict, JobNotFound, JobStore, Versioned
from bus.rpc import BusUnavailable
from contracts.messages import (
    JobEvent,
    JobRecord,
    JobStatus,
    JobUpload,
    RunJob,
)
from contracts.subjects import job_cancel_subject
from gateway.config import Jobs
from gateway.jobs.admission import Submitter, admit
from gateway.jobs.awaiting import AwaitedJob, Follower
from gateway.jobs.deliveries import pending_webhook, request_delivery
from gateway.jobs.media import MediaGone, Retake, Steering, media_kept, media_name, stored_objects
from gateway.jobs.views import JobView, job_view
from gateway.jobs.worker import status_event, tell
from gateway.uploads import ReceivedForm

log = logging.getLogger(__name__)

# Uploads a gateway copies into the bucket at once; the other submissions wait their turn
# with their upload on disk. Each store holds a few copies of a 256 kB chunk: 500
# submissions at once took the gateway from 90 MiB to 599 MiB unbounded, to 165 MiB
# with 8 (2: 182, 16: 185), and submitted faster (p50 1.4 s against 1.8 s; bench.jobs).
STORES_AT_ONCE = 8


class JobFinished(Exception):
    """The job has ended already: it cannot be cancelled (409)."""


class KeyReused(Exception):
    """An Idempotency-Key came again with a different request (422)."""


class KeyInUse(Exception):
    """An Idempotency-Key's first request is still making its job (409)."""


_JOB_ID = re.compile(r"job_[0-9a-f]{32}")


def new_job_id() -> str:
    """128 random bits, URL- and subject-safe."""
    return "job_" + secrets.token_hex(16)


class JobService:
    def __init__(
        self,
        nc: Client,
        store: JobStore,
        keys: JobKeys,
        media: BlobStore,
        settings: Jobs,
        on_ended: Callable[[str], None] | None = None,
        scratch: str | None = None,
    ) -> None:
        self.on_ended = on_ended
        self.scratch = scratch  # where copies pass through (the uploads' directory)
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
        await admit(self.store, self.settings, submitter)
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
            record = self._new_record(
                job_id,
                now,
                kind=form.kind,
                uploads=[
                    JobUpload(name=u.name, size=u.size, stored=u.data is None) for u in uploads
                ],
                owner=submitter.owner,
                prompt=form.prompt,
                length=form.length,
                cast=form.cast,
                keep=keep,
                watched=watched,
                request_id=request_id,
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
            )
        except BaseException:
            await blobs.delete_quietly(self.media, stored)
            raise
        return await self._queue(record, uploads, submitter)

    def _new_record(self, job_id: str, now: float, **fields: Any) -> JobRecord:
        """A queued job's first record, living ``ttl`` from ``now``, in this trace."""
        return JobRecord(
            id=job_id,
            status=JobStatus.QUEUED,
            created_at=now,
            expires_at=now + self.settings.ttl,
            trace=tracing.with_context({}) or {},
            **fields,
        )

    async def _queue(
        self, record: JobRecord, uploads: list[JobUpload], submitter: Submitter
    ) -> Versioned:
        """Create the job's record, tell its first status and queue its work. Whatever
        fails, nothing of the job is left (its stored objects included)."""
        try:
            created = await self.store.create(record)
        except BaseException:
            await blobs.delete_quietly(self.media, stored_objects(record))
            with contextlib.suppress(NatsError, blobs.BlobsUnavailable, JobNotFound):
                await self.store.delete(record.id)  # a create that went through unanswered
            raise
        try:
            await tell(self.nc, self.store, record, status_event(record))
            await self.store.enqueue(RunJob(job_id=record.id, uploads=uploads), submitter.queue)
        except BaseException:
            await self._remove(record)
            raise
        return created

    async def again(
        self, job_id: str, submitter: Submitter, steering: Steering, request_id: str | None
    ) -> Versioned:
        """Another take of job ``job_id``: a new kept job on copies of its media (and of
        the frames it kept, so its frame stage is not run again), with ``steering`` in
        place of the original's prompt, length or cast where it says.

        Raises JobNotFound as ``get``, MediaGone when the media are no longer kept,
        QueueFull, and the bucket's or the bus's errors (nothing left behind).
        """
        source = (await self.get(job_id, submitter.owner)).record
        if not self.media_kept(source):
            raise MediaGone(job_id)
        if not self.nc.is_connected:
            raise BusUnavailable()
        await admit(self.store, self.settings, submitter)
        new_id = new_job_id()
        now = time.time()
        retake = Retake.of(source, new_id)
        record = self._new_record(
            new_id,
            now,
            kind=source.kind,
            uploads=retake.uploads,
            owner=submitter.owner,
            prompt=(steering.prompt or None) if steering.prompt is not None else source.prompt,
            length=steering.length if steering.length is not None else source.length,
            cast=steering.cast if steering.cast is not None else source.cast,
            request_id=request_id,
            frames=retake.frames,
            video=source.video if retake.frames else None,
            again_of=source.id,
        )
        copied: list[str] = []
        try:
            for original, copy in retake.copies:
                async with self._storing:
                    await blobs.copy_object(self.media, original, copy, self.scratch)
                copied.append(copy)
        except ObjectNotFoundError as err:
            await blobs.delete_quietly(self.media, copied)
            raise MediaGone(job_id) from err
        except BaseException:
            await blobs.delete_quietly(self.media, copied)
            raise
        return await self._queue(record, retake.uploads, submitter)

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
                    media_removed=True,
                )
            except JobConflict:
                continue  # it moved on meanwhile: look again
            break
        if self.on_ended is not None:
            self.on_ended(canceled.record.status.value)
        with contextlib.suppress(NatsError):
            await self.nc.publish(job_cancel_subject(job_id), b"")
        await tell(self.nc, self.store, canceled.record, status_event(canceled.record))
        await blobs.delete_quietly(self.media, stored_objects(canceled.record))
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
        """Remove an ended job's stored uploads and frames: its story is told. A kept
        job's stay for another take until ``keep_media`` after it ended (the sweep
        removes them then)."""
        if not self.media_kept(record):
            await blobs.delete_quietly(self.media, stored_objects(record))

    def view(self, record: JobRecord) -> JobView:
        """The job as the API shows it, with whether its media are kept for another take."""
        kept = self.media_kept(record)
        until = None
        if kept and record.finished_at is not None:
            until = record.finished_at + self.settings.keep_media
        return job_view(record, kept, until)

    def _media_expired(self, record: JobRecord, now: float) -> bool:
        """Whether an ended job still holds media no longer kept for another take."""
        return (
            record.status.finished and not record.media_removed and not self.media_kept(record, now)
        )

    def media_kept(self, record: JobRecord, now: float | None = None) -> bool:
        """Whether the job's uploads are still kept for another take of it."""
        return media_kept(record, self.settings.keep_media, now or time.time())

    async def _remove(self, record: JobRecord) -> None:
        await blobs.delete_quietly(self.media, stored_objects(record))
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
                current = await self.store.get(job_id)
            except JobNotFound:
                continue
            record = current.record
            if record.expires_at <= now:
                await self._remove(record)
                swept += 1
            elif self._media_expired(record, now):
                # Kept for another take until now: the job stays, its media go.
                await blobs.delete_quietly(self.media, stored_objects(record))
                with contextlib.suppress(JobConflict, JobNotFound):
                    await self.store.update(current, media_removed=True)
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
