"""A caller that waits for its job (``/analyze/``, ``/analyze/stream``): it hears the
job's events as they are published and reads the record once they say it ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from contracts.messages import JobError, JobEvent, JobRecord, JobStatus
from contracts.subjects import job_events_subject, job_live_subject
from gateway.jobs.worker import JobFailed

if TYPE_CHECKING:  # the service makes these; they only call it back
    from gateway.jobs.service import JobService

_events = msgspec.msgpack.Decoder(JobEvent)
_status = msgspec.json.Decoder(dict[str, object])
# How often a synchronous caller reads the record, besides hearing the job's events:
# an event missed while the connection to NATS was re-established is not waited for.
_RECHECK_SECONDS = 5.0


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
            record = await self._outcome()
        finally:
            await self.follower.close()
            if not self.keep:
                self.service.discard_soon(self.job_id, record)
        if record.result is not None:
            return record.result
        error = record.error or JobError(status=503, detail="the job was canceled")
        raise JobFailed(error.status, error.detail, error.retry_after)

    async def _outcome(self) -> JobRecord:
        """Wait until the job ends: its events say so, or a read of its record does."""
        heard = self.follower.ended
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), _RECHECK_SECONDS)
            heard.clear()
            record = (await self.service.store.get(self.job_id)).record
            if record.status.finished:
                return record


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
