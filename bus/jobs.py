"""Durable jobs on JetStream: state in a KV bucket, work on a work queue, events in a stream.

A job's record is one KV entry, changed only by compare-and-set on its revision, so two
replicas that both think they hold a job cannot both finish it: the second write fails.
The work is a ``RunJob`` on a work-queue stream whose one durable pull consumer every
gateway's workers share; a worker that stops acking (it died) has the job delivered
again after ``ack_wait``. Events are kept per job in a stream, numbered by their stream
sequence, so a reader can resume after the last one it saw.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from bus.blobs import through_elections
from contracts.messages import JobEvent, JobRecord, RunJob
from contracts.subjects import (
    JOB_EVENTS_PREFIX,
    JOB_EVENTS_STREAM,
    JOBS_BUCKET,
    JOBS_STREAM,
    JOBS_WORK_PREFIX,
    JOBS_WORKERS,
    job_events_subject,
    job_work_subject,
)

log = logging.getLogger(__name__)

_records = msgspec.msgpack.Decoder(JobRecord)
_events = msgspec.msgpack.Decoder(JobEvent)
_encoder = msgspec.msgpack.Encoder()
_STREAM_NAME_IN_USE = 10058  # JetStream's error code when a stream exists already
_CONSUMER_EXISTS = 10148  # ... and when a durable exists, otherwise configured
DUPLICATE_WINDOW = 120.0  # seconds within which the same job queued again is dropped


@dataclass(frozen=True)
class JobsConfig:
    """How the jobs' bucket and streams are made, by whichever process makes them first."""

    ttl: float = 24 * 3600.0  # a job, its events and its media live this long at most
    replicas: int = 1
    ack_wait: float = 30.0  # a worker silent this long (no progress ack) has lost its job
    # Seconds the record and the events outlive ``ttl`` in JetStream: a sweep must find
    # the job expired, to remove its media, before JetStream drops its record by itself.
    grace: float = 0.0


class JobNotFound(Exception):
    """No such job (never made, deleted or expired)."""


class JobConflict(Exception):
    """The job changed since it was read: someone else's compare-and-set came first."""


@dataclass(frozen=True)
class Versioned:
    """A job's record as read, with the KV revision a compare-and-set must name."""

    record: JobRecord
    revision: int


class JobStore:
    """The three JetStream parts of durable jobs, opened (or made) together."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, config: JobsConfig) -> None:
        self.js = js
        self.kv = kv
        self.config = config

    @classmethod
    async def open(cls, js: JetStreamContext, config: JobsConfig | None = None) -> JobStore:
        """Bind to the jobs' bucket and streams, creating any that is missing."""
        config = config or JobsConfig()
        kv = await ensure_key_value(js, JOBS_BUCKET, config.ttl + config.grace, config.replicas)
        await ensure_stream(
            js,
            StreamConfig(
                name=JOBS_STREAM,
                subjects=[f"{JOBS_WORK_PREFIX}.*"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=config.replicas,
                max_age=config.ttl,
                # JetStream refuses a window longer than max_age (IMGSTORY_JOB_TTL=60, the
                # least allowed, kept every gateway from starting).
                duplicate_window=min(DUPLICATE_WINDOW, config.ttl),
            ),
        )
        workers = ConsumerConfig(
            durable_name=JOBS_WORKERS,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_deliver=-1,  # attempts are bounded by the worker, which fails the job
            max_ack_pending=-1,
        )
        await ensure_consumer(js, JOBS_STREAM, workers)
        await ensure_stream(
            js,
            StreamConfig(
                name=JOB_EVENTS_STREAM,
                subjects=[f"{JOB_EVENTS_PREFIX}.*"],
                storage=StorageType.FILE,
                num_replicas=config.replicas,
                max_age=config.ttl + config.grace,
            ),
        )
        return cls(js, kv, config)

    # --- the record -----------------------------------------------------------------

    async def create(self, record: JobRecord) -> Versioned:
        """Store a new job's record. Raises JobConflict when the id is taken."""
        data = _encoder.encode(record)
        try:
            revision = await through_elections(
                lambda: self.kv.create(record.id, data), f"creating job {record.id}"
            )
        except KeyWrongLastSequenceError as err:
            # A create whose answer was lost (an election) and sent again finds itself.
            now = await self.get(record.id)
            if now.record == record:
                return now
            raise JobConflict(f"job {record.id} exists already") from err
        return Versioned(record, revision)

    async def get(self, job_id: str) -> Versioned:
        """The job's record as it is now. Raises JobNotFound."""
        try:
            entry = await through_elections(lambda: self.kv.get(job_id), f"reading job {job_id}")
        except (KeyNotFoundError, KeyDeletedError) as err:
            raise JobNotFound(job_id) from err
        if entry.value is None or entry.revision is None:
            raise JobNotFound(job_id)
        return Versioned(_records.decode(entry.value), entry.revision)

    async def replace(self, current: Versioned, record: JobRecord) -> Versioned:
        """Write ``record`` if the job is still at ``current``'s revision.

        Raises JobConflict when it moved on (another writer came first), JobNotFound
        when it is gone. A write that went through but whose answer was lost (a leader
        election) is recognised on reading back, not mistaken for a conflict.
        """
        data = _encoder.encode(record)
        try:
            revision = await through_elections(
                lambda: self.kv.update(record.id, data, last=current.revision),
                f"updating job {record.id}",
            )
        except KeyWrongLastSequenceError as err:
            now = await self.get(record.id)
            if now.record == record:
                return now
            raise JobConflict(f"job {record.id} changed meanwhile") from err
        return Versioned(record, revision)

    async def update(self, current: Versioned, **changes: object) -> Versioned:
        """``replace`` with ``current``'s record changed as ``changes`` say."""
        return await self.replace(current, msgspec.structs.replace(current.record, **changes))

    async def delete(self, job_id: str, events: bool = True) -> None:
        """Remove the record and every event, leaving no tombstone; missing parts are fine.
        ``events=False``: the job stored none (it was not kept), so none are looked for."""
        # Purged from the bucket's stream itself: kv.purge would leave a marker behind.
        await through_elections(
            lambda: self.js.purge_stream(
                f"KV_{JOBS_BUCKET}", subject=f"$KV.{JOBS_BUCKET}.{job_id}"
            ),
            f"purging job {job_id}",
        )
        if not events:
            return
        await through_elections(
            lambda: self.js.purge_stream(JOB_EVENTS_STREAM, subject=job_events_subject(job_id)),
            f"purging job {job_id}'s events",
        )

    async def job_ids(self) -> list[str]:
        """Every job's id (for sweeps and listings).

        Read from the bucket's stream in one request: nats-py's ``kv.keys()`` watches the
        bucket until it has seen as many entries as were pending when it began, and a key
        purged meanwhile (a job deleted) can leave it waiting for ever.
        """
        prefix = f"$KV.{JOBS_BUCKET}."
        info = await through_elections(
            lambda: self.js.stream_info(f"KV_{JOBS_BUCKET}", subjects_filter=f"{prefix}>"),
            "listing the jobs",
        )
        return [subject.removeprefix(prefix) for subject in (info.state.subjects or {})]

    # --- the work -------------------------------------------------------------------

    async def enqueue(self, run: RunJob, submitter: str = "anyone") -> None:
        """Put the job's work on ``submitter``'s queue, once: a resend within two minutes
        (or the jobs' ttl, if shorter) is dropped. ``submitter`` is a subject token
        (letters, digits, - and _)."""
        data = _encoder.encode(run)
        subject = job_work_subject(submitter)
        await through_elections(
            lambda: self.js.publish(subject, data, headers={"Nats-Msg-Id": run.job_id}),
            f"queueing job {run.job_id}",
        )

    async def work(self) -> JetStreamContext.PullSubscription:
        """A pull subscription on the work queue, for one replica's workers."""
        return await self.js.pull_subscribe_bind(JOBS_WORKERS, stream=JOBS_STREAM)

    async def queued(self) -> int:
        """Jobs on the queue not yet taken by a worker."""
        info = await self.js.consumer_info(JOBS_STREAM, JOBS_WORKERS)
        return int(info.num_pending or 0)

    async def unfinished(self, submitter: str) -> tuple[int, int]:
        """Jobs queued or running: in all, and ``submitter``'s (work leaves the queue
        only when its job's outcome is written)."""
        subject = job_work_subject(submitter)
        # Asked before every submission: while the queue's stream elects a leader it is
        # asked again, rather than turning the submission away (a 503).
        info = await through_elections(
            lambda: self.js.stream_info(JOBS_STREAM, subjects_filter=subject),
            "counting the queued jobs",
        )
        mine = (info.state.subjects or {}).get(subject, 0)
        return int(info.state.messages), int(mine)

    async def oldest_queued_at(self) -> float | None:
        """When the oldest job no worker has taken yet was queued (UNIX time), or None."""
        info = await self.js.consumer_info(JOBS_STREAM, JOBS_WORKERS)
        if not info.num_pending:
            return None
        # Work past the last one delivered is waiting; the first of it is the oldest.
        after = (info.delivered.stream_seq or 0) + 1
        try:
            first = await self.js.get_msg(
                JOBS_STREAM, seq=after, subject=f"{JOBS_WORK_PREFIX}.>", next=True
            )
        except NotFoundError:
            return None
        return first.time.timestamp() if first.time else None

    # --- the events -----------------------------------------------------------------

    async def publish(self, job_id: str, event: JobEvent) -> int:
        """Store one event of the job; its number (the stream sequence) is returned."""
        data = _encoder.encode(event)
        ack = await through_elections(
            lambda: self.js.publish(job_events_subject(job_id), data),
            f"publishing job {job_id}'s {event.name}",
        )
        return int(ack.seq)

    async def events(
        self, job_id: str, after: int = 0, idle: float = 15.0
    ) -> AsyncIterator[tuple[int, JobEvent] | None]:
        """The job's events numbered above ``after``, then each new one as it comes;
        None after each ``idle`` seconds without one (the reader may look around).

        It never ends by itself: the reader stops when it has seen a last event.
        """
        start = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None,
        )
        subscription = await through_elections(
            lambda: self.js.subscribe(
                job_events_subject(job_id),
                stream=JOB_EVENTS_STREAM,
                config=start,
                ordered_consumer=True,
            ),
            f"reading job {job_id}'s events",
        )
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=idle)
                except NatsTimeoutError:
                    yield None
                    continue
                seq = msg.metadata.sequence.stream
                try:
                    event = _events.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.warning("job %s: an unreadable event (%d) was skipped", job_id, seq)
                    continue
                yield seq, event
        finally:
            with contextlib.suppress(NatsError):  # the connection may be closing
                await subscription.unsubscribe()


async def ensure_key_value(
    js: JetStreamContext, bucket: str, ttl: float, replicas: int
) -> KeyValue:
    """The KV bucket, made as given unless it exists (another process's is used)."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    config = KeyValueConfig(
        bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE, replicas=replicas
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError as err:
        if err.err_code != _STREAM_NAME_IN_USE:
            raise
        return await js.key_value(bucket)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Make the stream unless it exists (made by another process first, maybe otherwise
    configured: theirs is used)."""
    try:
        await js.add_stream(config)
    except BadRequestError as err:
        if err.err_code != _STREAM_NAME_IN_USE:
            raise


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Make the durable consumer unless it exists."""
    try:
        await js.add_consumer(stream, config)
    except BadRequestError as err:
        if err.err_code != _CONSUMER_EXISTS:
            raise
