"""Serving endpoints on a micro service: decode, run the handler in a slot, reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from bus import tracing
from bus.liveness import HEARTBEAT_INTERVAL
from bus.logs import REQUEST_ID, request_id_from
from contracts.messages import Alive, Failure, FailureCode, StageRequest
from contracts.subjects import CANCEL_ALL, Endpoint, Rep, Req, ServiceSpec

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()

# How long a stopping replica lets its calls finish before it cancels them.
STOP_GRACE = 30.0


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
                        detail=f"the {endpoint.service.label} ran out of time",
                    )
                else:
                    # The task boundary: micro never sees this task, so answer for it.
                    log.exception("%s failed", endpoint.subject)
                    failure = Failure(
                        code=FailureCode.INTERNAL,
                        detail=f"the {endpoint.service.label} failed unexpectedly",
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
