"""Durable delivery of jobs' webhooks: a work queue of ``DeliverWebhook``, and senders.

Once a job ends, ``request_delivery`` puts one message on the webhooks' work queue,
whose durable pull consumer every gateway's senders share, so a delivery outlives the
replica that asked for it. A sender POSTs the job, signed, to its URL; the answer
decides: 2xx is delivered (ack), a 4xx other than 408/429 or a target no longer allowed
is failed (term), anything else is tried again after a negative ack with a delay
(exponential, jittered, or the receiver's Retry-After) until ``retry_for`` has passed
since the message was queued. Every try carries the job's one webhook-id, so a receiver
that saw a try it could not answer recognises the next. Each outcome is written to the
job's record by compare-and-set, changing its ``webhook`` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import msgspec
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from bus.blobs import through_elections
from bus.jobs import (
    DUPLICATE_WINDOW,
    JobConflict,
    JobNotFound,
    JobsConfig,
    JobStore,
    ensure_consumer,
    ensure_stream,
)
from contracts.messages import DeliverWebhook, JobRecord, WebhookState, WebhookStatus
from contracts.subjects import WEBHOOKS_SENDERS, WEBHOOKS_STREAM, WEBHOOKS_SUBJECT
from gateway.jobs.loops import stopped
from gateway.jobs.webhooks import (
    HostUnresolved,
    Target,
    WebhookRefused,
    WebhookSettings,
    resolve,
    signed_headers,
)

log = logging.getLogger(__name__)

# The job as its API shows it, as JSON: the body of every try.
Render = Callable[[JobRecord], bytes]

ACK_WAIT = 60.0  # a sender silent this long (it died mid-try) has its delivery given to another
USER_AGENT = "ImgStory-Webhooks/1"
_encoder = msgspec.msgpack.Encoder()
_deliveries = msgspec.msgpack.Decoder(DeliverWebhook)


def webhook_id(job_id: str) -> str:
    """The job's one webhook-id: fixed, so every try and every redelivery carries it."""
    return f"msg_{job_id}"


def pending_webhook(record: JobRecord) -> WebhookState | None:
    """The ``webhook`` to write with a job's final status: None when it has no URL."""
    if record.webhook_url is None:
        return None
    return record.webhook or WebhookState(id=webhook_id(record.id))


async def open_deliveries(js: JetStreamContext, config: JobsConfig) -> None:
    """Make the webhooks' work queue and its senders' consumer unless they exist.

    Replicated and kept as the jobs' own streams are: a delivery cannot outlive its job.
    """
    stream = StreamConfig(
        name=WEBHOOKS_STREAM,
        subjects=[WEBHOOKS_SUBJECT],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=config.replicas,
        max_age=config.ttl,
        duplicate_window=min(DUPLICATE_WINDOW, config.ttl),  # no longer than max_age
    )
    await ensure_stream(js, stream)
    senders = ConsumerConfig(
        durable_name=WEBHOOKS_SENDERS,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_deliver=-1,  # tries are bounded in time by the senders, which then fail it
        max_ack_pending=-1,
    )
    await ensure_consumer(js, WEBHOOKS_STREAM, senders)


async def request_delivery(store: JobStore, job_id: str, known: JobRecord | None = None) -> bool:
    """Queue the ended job's webhook; False when it has none or it was delivered already.

    Call it once the job's final status is written; ``known`` is its record when the
    caller holds it (a job made without a webhook then costs no read). The record's
    ``webhook`` is set pending (with its fixed id) unless that final write set it
    already. A second request within two minutes is dropped by the queue; a later one
    only makes a sender look again. Raises JobNotFound.
    """
    if known is not None and known.webhook_url is None:
        return False  # a job's webhook URL is set when it is made, never later
    while True:
        current = await store.get(job_id)
        state = pending_webhook(current.record)
        if state is None or state.status is not WebhookStatus.PENDING:
            return False
        if current.record.webhook is not None:
            break
        try:
            await store.update(current, webhook=state)
            break
        except JobConflict:
            continue  # changed meanwhile: look again
    data = _encoder.encode(DeliverWebhook(job_id=job_id))
    await through_elections(
        lambda: store.js.publish(
            WEBHOOKS_SUBJECT, data, headers={"Nats-Msg-Id": f"webhook-{job_id}"}
        ),
        f"queueing job {job_id}'s webhook",
    )
    return True


async def queued_deliveries(js: JetStreamContext) -> int:
    """Deliveries waiting on the queue, for their first try or a later one."""
    info = await js.consumer_info(WEBHOOKS_STREAM, WEBHOOKS_SENDERS)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


@dataclass(frozen=True)
class Attempt:
    """How one try went: the receiver's status, or why there was none."""

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait
    refused: bool = False  # the target is no longer one this server may call

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def final(self) -> bool:
        """No later try can go better: the receiver or this server said no."""
        return self.refused or (
            self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)
        )


def retry_delay(settings: WebhookSettings, tries: int, retry_after: float | None) -> float:
    """Seconds before the next try after ``tries`` failed ones.

    The receiver's Retry-After when it gave one (within the backoff's bounds), otherwise
    exponential from ``first_backoff`` (x4 a try) up to ``max_backoff``, jittered by up
    to 20 % so receivers that failed together are not all tried again together.
    """
    if retry_after is not None:
        return min(max(retry_after, settings.first_backoff), settings.max_backoff)
    delay = min(settings.first_backoff * 4.0 ** max(tries - 1, 0), settings.max_backoff)
    return delay * random.uniform(0.8, 1.2)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A Retry-After header's seconds (a number of seconds or an HTTP date); None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None  # not an HTTP date, which is always GMT
    return max(when.timestamp() - now, 0.0)


class Senders:
    """``settings.senders`` loops taking deliveries from the shared webhooks queue."""

    def __init__(self, store: JobStore, settings: WebhookSettings, render: Render) -> None:
        self.store = store
        self.settings = settings
        self.render = render
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        if self.settings.secret is None or self.settings.senders == 0:
            return  # webhooks off, or this replica sends none
        self._secret = self.settings.secret
        self._client = httpx.AsyncClient(
            timeout=self.settings.timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is called
            # A fresh connection each try: one made for another host at the same address
            # (with that host's TLS name) is never reused.
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT},
        )
        self._queue = await self.store.js.pull_subscribe_bind(
            WEBHOOKS_SENDERS, stream=WEBHOOKS_STREAM
        )
        self._loops = [asyncio.create_task(self._loop()) for _ in range(self.settings.senders)]

    async def close(self) -> None:
        """Stop sending; a try cut short is made again by whichever replica takes it."""
        await asyncio.gather(*(stopped(loop, self._stopping) for loop in self._loops))
        if self._loops:
            with contextlib.suppress(NatsError):
                await self._queue.unsubscribe()
            await self._client.aclose()
        self._loops = []

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._queue.fetch(1, timeout=5)
            except TimeoutError:
                continue
            except NatsError as err:
                log.warning("the webhooks queue did not answer (%s); trying again", err)
                await asyncio.sleep(1)
                continue
            for msg in batch:
                try:
                    await self._take(msg)
                except (NatsError, TimeoutError) as err:
                    # Not acked: the queue gives it again after ACK_WAIT.
                    log.warning("a webhook delivery was interrupted (%s)", err)
                except Exception:
                    log.exception("a webhook delivery failed; the queue will give it again")

    async def _take(self, msg: Msg) -> None:
        try:
            job_id = _deliveries.decode(msg.data).job_id
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error("an unreadable webhook delivery was dropped")
            await msg.term()
            return
        try:
            done = await self._deliver(msg, job_id)
        except JobNotFound:
            log.info("job %s: deleted before its webhook was delivered", job_id)
            done = True
        if done:
            with contextlib.suppress(NatsError):
                await msg.ack_sync()

    async def _deliver(self, msg: Msg, job_id: str) -> bool:
        """One try of the job's webhook; True when the delivery is over (ack it)."""
        record = (await self.store.get(job_id)).record
        state = pending_webhook(record)
        if record.webhook_url is None or state is None or state.status is not WebhookStatus.PENDING:
            return True  # no webhook, or a duplicate request of a finished delivery
        with contextlib.suppress(NatsError):
            await msg.in_progress()  # a try may take up to the timeout: keep the message
        attempt = await self._try(record, record.webhook_url, state.id)
        now = time.time()
        if attempt.delivered:
            await self._note(job_id, WebhookStatus.DELIVERED, attempt, delivered_at=now)
            log.info("job %s: webhook delivered (%s)", job_id, attempt.status)
            return True
        queued = msg.metadata.timestamp.timestamp()  # the same on every redelivery
        left = queued + self.settings.retry_for - now
        if attempt.final or left <= 0:
            if not attempt.final:
                error = f"{attempt.error}; no more tries after {self.settings.retry_for:g} s"
                attempt = dataclasses.replace(attempt, error=error)
            await self._note(job_id, WebhookStatus.FAILED, attempt)
            log.warning("job %s: webhook failed: %s", job_id, attempt.error)
            with contextlib.suppress(NatsError):
                await msg.term()
            return False
        tried = await self._note(job_id, WebhookStatus.PENDING, attempt)
        if tried is None:
            return True  # ended meanwhile by another sender
        delay = min(retry_delay(self.settings, tried.attempts, attempt.retry_after), left)
        log.info("job %s: webhook try %d: %s", job_id, tried.attempts, attempt.error)
        with contextlib.suppress(NatsError):
            await msg.nak(delay=delay)
        return False

    async def _try(self, record: JobRecord, url: str, webhook: str) -> Attempt:
        """POST the job to ``url`` once, checked again first (its DNS may have changed)."""
        try:
            target = await resolve(url, self.settings)
        except HostUnresolved as err:
            return Attempt(error=err.detail)
        except WebhookRefused as err:
            return Attempt(error=err.detail, refused=True)
        body = self.render(record)
        headers = signed_headers(self._secret, webhook, int(time.time()), body)
        try:
            async with asyncio.timeout(self.settings.timeout):
                status, retry_after = await self._post(target, body, headers)
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(error=f"the receiver did not answer within {self.settings.timeout:g} s")
        except httpx.ConnectError:
            return Attempt(error="could not connect to the receiver")
        except httpx.HTTPError:
            return Attempt(error="the connection to the receiver broke")
        error = None if 200 <= status < 300 else f"the receiver answered {status}"
        if status not in (429, 503):
            retry_after = None
        return Attempt(status=status, error=error, retry_after=retry_after)

    async def _post(
        self, target: Target, body: bytes, headers: dict[str, str]
    ) -> tuple[int, float | None]:
        """POST to the first of the checked addresses that takes the connection; its
        status and Retry-After. The answer's body is never read.

        The URL names the address itself, so no second DNS answer can send the body
        elsewhere; the Host header and TLS's server name stay the URL's host.
        """
        headers = {**headers, "host": target.url.netloc.decode("ascii")}
        extensions = {}
        if target.url.scheme == "https":
            extensions["sni_hostname"] = target.url.raw_host.decode("ascii")
        for address in target.addresses[:-1]:
            with contextlib.suppress(httpx.ConnectError):  # then the next address
                return await self._send(target.pinned(address), body, headers, extensions)
        return await self._send(target.pinned(target.addresses[-1]), body, headers, extensions)

    async def _send(
        self, url: httpx.URL, body: bytes, headers: dict[str, str], extensions: dict[str, str]
    ) -> tuple[int, float | None]:
        request = self._client.stream(
            "POST", url, content=body, headers=headers, extensions=extensions
        )
        async with request as response:
            retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
            return response.status_code, retry_after

    async def _note(
        self,
        job_id: str,
        status: WebhookStatus,
        attempt: Attempt,
        delivered_at: float | None = None,
    ) -> WebhookState | None:
        """Record one try on the job, by compare-and-set; None when the delivery had
        already ended (another sender's duplicate). Raises JobNotFound."""
        while True:
            current = await self.store.get(job_id)
            state = pending_webhook(current.record)
            if state is None or state.status is not WebhookStatus.PENDING:
                return None
            tried = msgspec.structs.replace(
                state,
                status=status,
                attempts=state.attempts + 1,
                last_status=attempt.status,
                last_error=attempt.error,
                delivered_at=delivered_at,
            )
            try:
                await self.store.update(current, webhook=tried)
            except JobConflict:
                continue  # the job changed meanwhile (a stage, a cancel): apply it again
            return tried
