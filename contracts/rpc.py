"""The only shared NATS code: call an endpoint, and serve one on a micro service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError, StaleConnectionError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro import add_service
from nats.micro.request import ERROR_HEADER, Request
from nats.micro.service import Service

from contracts import tracing
from contracts.logs import REQUEST_ID, request_id_from, request_id_headers
from contracts.messages import (
    Alive,
    Failure,
    FailureCode,
    Message,
    Paragraph,
    Progress,
    Stage,
    StageRequest,
)
from contracts.settings import Env, SettingsError
from contracts.subjects import CANCEL_ALL, Endpoint, Rep, Req, ServiceSpec

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()


def server_list(url: str) -> list[str]:
    """The servers in ``NATS_URL``: one URL, or a cluster's comma-separated seed list."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("NATS_URL names no server")
    return servers


class _ConnectionLog:
    """Tells the connection's story in one line per change of state.

    nats-py's default error callback logs a traceback for every failed reconnect
    attempt; the loss of the server is news once, and its return once.
    """

    # What a lost or refused connection raises: the disconnect line says it all.
    CONNECTIVITY = (OSError, TimeoutError, StaleConnectionError, NoServersError)

    def __init__(self, name: str) -> None:
        self.name = name
        self.client: Client | None = None
        self.down = False

    async def error(self, err: Exception) -> None:
        if isinstance(err, self.CONNECTIVITY):
            log.debug("%s: NATS: %s", self.name, err)
            return
        log.warning("%s: NATS: %s", self.name, str(err) or type(err).__name__)

    async def disconnected(self) -> None:
        if self.client is not None and self.client.is_closed:
            return  # we closed it ourselves
        if not self.down:
            self.down = True
            log.warning("%s lost its NATS connection; reconnecting", self.name)

    async def reconnected(self) -> None:
        self.down = False
        log.info("%s reconnected to NATS", self.name)


@dataclass(frozen=True)
class Credentials:
    """Who a process is on a locked-down NATS (deploy/nats/nats.conf), and whom its TLS trusts."""

    user: str | None = None
    password: str | None = None
    tls_ca: str | None = None  # a CA bundle: the connection must be TLS, checked against it

    @property
    def inbox_prefix(self) -> str:
        """Replies come back under the user's own prefix: the only inboxes it may read."""
        return f"_INBOX.{self.user}" if self.user else "_INBOX"


_USER = re.compile(r"[A-Za-z0-9_-]+")


def credentials(read: Env) -> Credentials:
    """``NATS_USER``, ``NATS_PASSWORD`` and ``NATS_TLS_CA``; none set is an open server.

    Raises SettingsError for a user without a password (or the reverse), or a user
    name that cannot be a subject token (it names the process's inboxes).
    """
    user, password = read.optional("NATS_USER"), read.optional("NATS_PASSWORD")
    if (user is None) != (password is None):
        raise SettingsError("NATS_USER and NATS_PASSWORD must be set together")
    if user is not None and not _USER.fullmatch(user):
        raise SettingsError(f"NATS_USER must be letters, digits, - or _, not {user!r}")
    return Credentials(user=user, password=password, tls_ca=read.optional("NATS_TLS_CA"))


async def connect(url: str, name: str, login: Credentials | None = None) -> Client:
    """Connect to NATS as every ImgStory process does: reconnect for ever, log tersely.

    ``login`` defaults to the process's ``credentials`` from its environment, the same
    variables for every process. Raises SettingsError for bad credentials settings and
    nats.errors.Error subclasses only for bad URLs; an unreachable server is retried
    until it answers.
    """
    login = login if login is not None else credentials(Env(os.environ))
    story = _ConnectionLog(name)
    story.client = await nats.connect(
        servers=server_list(url),
        name=name,
        user=login.user,
        password=login.password,
        inbox_prefix=login.inbox_prefix,
        tls=ssl.create_default_context(cafile=login.tls_ca) if login.tls_ca else None,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        error_cb=story.error,
        disconnected_cb=story.disconnected,
        reconnected_cb=story.reconnected,
    )
    return story.client


class CallError(Exception):
    """A call to a service endpoint did not produce a reply."""

    def __init__(self, endpoint: Endpoint[Any, Any] | None, detail: str) -> None:
        super().__init__(detail)
        self.endpoint = endpoint
        self.detail = detail


class ServiceNotRunning(CallError):
    """No replica of the service is subscribed (NATS answered 'no responders')."""


class ServiceTimedOut(CallError):
    """The service took longer than the caller was willing to wait."""


class BusUnavailable(CallError):
    """This process is not connected to NATS (it is reconnecting): nothing can be sent."""

    def __init__(self, endpoint: Endpoint[Any, Any] | None = None) -> None:
        super().__init__(endpoint, "the message bus (NATS) is unavailable")


class RemoteFailure(Exception):
    """A service answered with a Failure: ``call`` raises it with the envelope."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def _label(endpoint: Endpoint[Any, Any]) -> str:
    return endpoint.service.name.removeprefix("imgstory-") + " service"


class ReplicaLost(CallError):
    """Every replica that took the call went silent (died or hung) before answering."""


# Replicas beat this often for each call they hold; a caller's window must be wider.
HEARTBEAT_INTERVAL = 1.0
# How long a stopping replica lets its calls finish before it cancels them.
STOP_GRACE = 30.0


class Heartbeats:
    """When each watched call was last heard of, fed from one request's heartbeat subject."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._heard: dict[str, float] = {}

    def beat(self, call_id: str) -> None:
        if call_id in self._heard:
            self._heard[call_id] = time.monotonic()

    async def silence(self, call_id: str, window: float) -> None:
        """Return once ``call_id`` has not been heard of for ``window`` seconds.

        The clock starts now: the first beat is due within a window of sending. A call
        id is watched by one caller at a time (ValueError otherwise).
        """
        if call_id in self._heard:
            raise ValueError(f"call {call_id} is already watched")
        self._heard[call_id] = time.monotonic()
        try:
            while (quiet := time.monotonic() - self._heard[call_id]) < window:
                await asyncio.sleep(window - quiet)
        finally:
            del self._heard[call_id]


@dataclass(frozen=True)
class Liveness:
    """How a caller notices a replica that died or hangs while it holds the call."""

    heartbeats: Heartbeats
    window: float = 3.0  # silence this long means the replica is gone
    attempts: int = 3  # sends in all; NATS gives each to whichever replica it picks


async def call(
    nc: Client,
    endpoint: Endpoint[Req, Rep],
    request: Req,
    *,
    timeout: float,
    liveness: Liveness | None = None,
) -> Rep:
    """Send ``request`` to ``endpoint`` and return its result.

    With ``liveness`` the call carries a heartbeat subject and a deadline; a replica
    that goes silent is given up on and the call sent again, up to ``attempts`` sends
    within ``timeout`` in all. An answer from a replica given up on is dropped unread.
    Raises RemoteFailure when the service answers with a Failure, ServiceNotRunning
    when no replica listens, ServiceTimedOut after ``timeout``, ReplicaLost when every
    replica tried went silent, and BusUnavailable at once while the connection to
    NATS is down (rather than queueing the request).
    """
    if not isinstance(request, endpoint.request_type):
        raise TypeError(f"{endpoint.subject} takes {endpoint.request_type.__name__}")
    if liveness is None:
        return await _exchange(nc, endpoint, request, timeout)
    give_up = time.monotonic() + timeout
    for attempt in range(1, liveness.attempts + 1):
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            break
        sent = msgspec.structs.replace(
            request,
            heartbeat=liveness.heartbeats.subject,
            # Unique per send: one request may hold several calls to an endpoint at
            # once (a translation per paragraph), each watched on its own.
            call_id=f"{request.request_id}.{endpoint.name}.{secrets.token_hex(4)}.{attempt}",
            deadline=time.time() + remaining,
        )
        exchange = asyncio.ensure_future(
            # Within the liveness window, so the silence watch never mistakes the wait.
            _exchange_when_heard(nc, endpoint, sent, remaining, liveness.window - 2 * _NOBODY_POLL)
        )
        silence = asyncio.ensure_future(liveness.heartbeats.silence(sent.call_id, liveness.window))
        try:
            await asyncio.wait({exchange, silence}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exchange, silence):
                task.cancel()
            await asyncio.gather(exchange, silence, return_exceptions=True)
        if not exchange.cancelled():
            return exchange.result()
        log.warning(
            "request %s: the %s went silent holding it (send %d of %d)",
            request.request_id,
            _label(endpoint),
            attempt,
            liveness.attempts,
        )
    if time.monotonic() >= give_up:
        raise ServiceTimedOut(
            endpoint, f"the {_label(endpoint)} did not answer within {timeout:g} s"
        )
    raise ReplicaLost(endpoint, f"the {_label(endpoint)} stopped answering; try again later")


# How often a call with no replica listening looks again, within its grace.
_NOBODY_POLL = 0.2


async def _exchange_when_heard(
    nc: Client, endpoint: Endpoint[Req, Rep], request: Req, timeout: float, grace: float
) -> Rep:
    """_exchange, but a call nobody listens to is sent again for up to ``grace`` seconds.

    A replica that lost its NATS server is back with its subscriptions in a second or
    two (measured: a node killed in a three-node cluster, the story replica on it
    reconnected about a second later, as connect() waits 1 s between tries); a request
    sent meanwhile finds no responder. A service that is really down still fails
    within ``grace``.
    """
    started = time.monotonic()
    while True:
        try:
            return await _exchange(nc, endpoint, request, timeout - (time.monotonic() - started))
        except ServiceNotRunning:
            if time.monotonic() - started + _NOBODY_POLL >= min(grace, timeout):
                raise
            await asyncio.sleep(_NOBODY_POLL)


async def _exchange(nc: Client, endpoint: Endpoint[Req, Rep], request: Req, timeout: float) -> Rep:
    """One request and its reply, in a client span of its own: each resend is another."""
    with tracing.sending(endpoint.subject, REQUEST_ID.get() or request.request_id):
        return await _send(nc, endpoint, request, timeout)


async def _send(nc: Client, endpoint: Endpoint[Req, Rep], request: Req, timeout: float) -> Rep:
    """One request and its reply."""
    if not nc.is_connected:
        raise BusUnavailable(endpoint)
    try:
        msg = await nc.request(
            endpoint.subject,
            _encoder.encode(request),
            timeout=timeout,
            # The service's log lines name the caller's request; its span continues ours.
            headers=tracing.with_context(request_id_headers()),
        )
    except NoRespondersError as err:
        raise ServiceNotRunning(endpoint, f"the {_label(endpoint)} is not running") from err
    except (TimeoutError, NatsTimeoutError) as err:
        raise ServiceTimedOut(
            endpoint, f"the {_label(endpoint)} did not answer within {timeout:g} s"
        ) from err
    if not msg.data and msg.headers and ERROR_HEADER in msg.headers:
        # An error micro produced itself (not one of ours): keep its text out of replies.
        log.error("%s answered a bare micro error: %s", endpoint.subject, msg.headers)
        raise RemoteFailure(
            Failure(code=FailureCode.INTERNAL, detail=f"the {_label(endpoint)} failed")
        )
    reply = endpoint.decode_reply(msg.data)
    if isinstance(reply, Failure):
        raise RemoteFailure(reply)
    return reply


class Figures(msgspec.Struct):
    """What one endpoint of a replica has done since it started (its $SRV.STATS data)."""

    served: int = 0
    failed: dict[str, int] = msgspec.field(default_factory=dict)  # by FailureCode
    cancelled: int = 0  # dropped: the caller sent Cancel, or the replica stopped
    seconds: float = 0.0  # in the handler, queueing for a slot not counted


class Server:
    """A micro service whose endpoints decode contracts, run a handler and reply.

    Every call a replica holds, queued or running, is beaten for on its heartbeat
    subject, dropped when a Cancel for its request arrives, and abandoned when its
    deadline passes. Each endpoint runs up to ``max_in_flight`` calls at once.
    """

    def __init__(self, nc: Client, service: Service, figures: dict[str, Figures]) -> None:
        self.nc = nc
        self.service = service
        self.figures = figures  # by endpoint name
        self._held: dict[asyncio.Task[None], StageRequest] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._cancels: Subscription | None = None

    @classmethod
    async def start(
        cls, nc: Client, spec: ServiceSpec, metadata: Mapping[str, str] | None = None
    ) -> Server:
        """Start the micro service; ``metadata`` is what its $SRV.INFO states (capabilities).

        Each endpoint's $SRV.STATS ``data`` holds its Figures: micro itself only times
        the hand-off of a call to its task, and never sees the failures we answer.
        """
        figures: dict[str, Figures] = {}
        service = await add_service(
            nc,
            name=spec.name,
            version=spec.version,
            description=spec.description,
            metadata=dict(metadata or {}),
            queue_group=spec.queue_group,
            stats_handler=lambda stats: msgspec.to_builtins(figures.get(stats.name, Figures())),
        )
        server = cls(nc, service, figures)
        server._cancels = await nc.subscribe(CANCEL_ALL, cb=server._on_cancel)
        server._ticker = asyncio.create_task(server._beat_forever())
        return server

    async def add(
        self,
        endpoint: Endpoint[Req, Rep],
        handler: Callable[[Req], Awaitable[Rep]],
        *,
        errors: Mapping[type[Exception], FailureCode] | None = None,
        max_in_flight: int = 1,
    ) -> None:
        """Serve ``endpoint`` with ``handler``; exceptions in ``errors`` become Failures."""
        error_codes = dict(errors or {})
        slots = asyncio.Semaphore(max_in_flight)
        figures = self.figures.setdefault(endpoint.name, Figures())

        async def serve(req: Request, request: Req) -> None:
            # This task's log lines name the request: the caller's id from the headers,
            # else (a caller that sends none) the one in the message.
            REQUEST_ID.set(request_id_from(req.headers, request.request_id))
            remaining = None if request.deadline is None else request.deadline - time.time()
            failure: Failure
            started = None
            try:
                async with asyncio.timeout(remaining) as deadline:
                    async with slots:
                        started = time.perf_counter()
                        reply = await handler(request)
            except asyncio.CancelledError:
                figures.cancelled += 1
                raise
            except tuple(error_codes) as err:
                failure = _failure_for(err, error_codes)
            except Exception as err:
                if isinstance(err, TimeoutError) and deadline.expired():
                    log.info(
                        "request %s: %s abandoned at its deadline",
                        request.request_id,
                        endpoint.name,
                    )
                    failure = Failure(
                        code=FailureCode.UPSTREAM_UNAVAILABLE,
                        detail=f"the {_label(endpoint)} ran out of time",
                    )
                else:
                    # The task boundary: micro never sees this task, so answer for it.
                    log.exception("%s failed", endpoint.subject)
                    failure = Failure(
                        code=FailureCode.INTERNAL,
                        detail=f"the {_label(endpoint)} failed unexpectedly",
                    )
            else:
                figures.served += 1
                await req.respond(_encoder.encode(reply))
                return
            finally:
                if started is not None:
                    figures.seconds += time.perf_counter() - started
            figures.failed[failure.code] = figures.failed.get(failure.code, 0) + 1
            tracing.failed(failure.code, failure.detail)
            await _respond_failure(req, failure)

        async def on_request(req: Request) -> None:
            try:
                request = endpoint.decode_request(req.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                failure = Failure(
                    code=FailureCode.INTERNAL, detail=f"malformed {endpoint.name} request: {err}"
                )
                await _respond_failure(req, failure)
                return
            if request.deadline is not None and request.deadline <= time.time():
                log.info(
                    "request %s: %s arrived after its deadline", request.request_id, endpoint.name
                )
                return
            # A task at once (not after a slot frees): queued calls are beaten for too.
            # Its span is the child of the caller's send, whose context the headers carry.
            request_id = request_id_from(req.headers, request.request_id)
            traced = tracing.served(serve(req, request), req.headers, endpoint.subject, request_id)
            task = asyncio.create_task(traced)
            self._held[task] = request
            task.add_done_callback(self._release)
            await self._beat(request)

        await self.service.add_endpoint(
            name=endpoint.name,
            subject=endpoint.subject,
            queue_group=endpoint.service.queue_group,
            handler=on_request,
        )
        # Once add() returns, the server knows the subscription: requests will reach it.
        # nats-py's flush writes its PING straight to the socket, ahead of commands still
        # queued (the SUB among them), and queues those to go next: the first PONG can
        # come back before the SUB was sent, the second cannot.
        await self.nc.flush()
        await self.nc.flush()

    @property
    def holding(self) -> int:
        """How many calls this replica holds, queued or running."""
        return len(self._held)

    def _release(self, task: asyncio.Task[None]) -> None:
        self._held.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("a call ended with an error", exc_info=task.exception())

    async def _beat(self, request: StageRequest) -> None:
        if request.heartbeat is None:
            return
        alive = Alive(request_id=request.request_id, call_id=request.call_id)
        with contextlib.suppress(NatsError):  # a beat lost to a reconnect is only a beat
            await self.nc.publish(request.heartbeat, _encoder.encode(alive))

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            for request in list(self._held.values()):
                await self._beat(request)

    async def _on_cancel(self, msg: Msg) -> None:
        request_id = msg.subject.rpartition(".")[2]
        for task, request in list(self._held.items()):
            if request.request_id == request_id:
                log.info("request %s: cancelled by the caller", request_id)
                task.cancel()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop taking requests, let those in flight finish for up to ``grace`` seconds,
        then cancel the rest (their callers resend them to another replica)."""
        await self.service.stop()
        if self._held:
            _, late = await asyncio.wait(list(self._held), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._cancels is not None:
            with contextlib.suppress(NatsError):
                await self._cancels.unsubscribe()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)


async def _respond_failure(req: Request, failure: Failure) -> None:
    """Answer with the envelope, and with micro's error headers so NATS tools see it."""
    await req.respond_error(str(failure.code.status), failure.detail, data=_encoder.encode(failure))


def _failure_for(err: Exception, codes: Mapping[type[Exception], FailureCode]) -> Failure:
    code = next(codes[t] for t in type(err).__mro__ if t in codes)
    retry_after = getattr(err, "retry_after", None)
    return Failure(code=code, detail=str(err) or code.value, retry_after=retry_after)


class Reporter:
    """Publishes Progress for one request; does nothing when the caller is not listening."""

    def __init__(self, nc: Client, subject: str | None, request_id: str) -> None:
        self.nc = nc
        self.subject = subject
        self.request_id = request_id
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[None]] = set()  # publishes under way (kept referenced)

    async def stage(self, stage: Stage, detail: str = "") -> None:
        await self._publish(Progress(request_id=self.request_id, stage=stage, detail=detail))

    def text_from_thread(self, stage: Stage, piece: str) -> None:
        """Publish a piece of generated text; safe to call from a worker thread."""
        if piece:
            self._from_thread(Progress(request_id=self.request_id, stage=stage, text=piece))

    def paragraph_from_thread(self, index: int, text: str) -> None:
        """Publish a finished paragraph; safe to call from a worker thread."""
        self._from_thread(Paragraph(request_id=self.request_id, index=index, text=text))

    def _from_thread(self, news: Message) -> None:
        if self.subject is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            # A streaming HTTP client calls back on the loop: a task is enough, without
            # waking the loop through its self-pipe for every piece of text.
            task = self._loop.create_task(self._publish(news))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        else:
            asyncio.run_coroutine_threadsafe(self._publish(news), self._loop)

    async def _publish(self, news: Message) -> None:
        if self.subject is not None:
            with contextlib.suppress(NatsError):  # news lost to a reconnect is only news
                await self.nc.publish(self.subject, _encoder.encode(news))
