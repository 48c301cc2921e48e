"""A replica of a micro service: its endpoints, the calls it holds, their beats and cancels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.micro import add_service
from nats.micro.service import Service

from bus.endpoint import EndpointRunner, Figures
from bus.liveness import HEARTBEAT_INTERVAL
from contracts.messages import Alive, FailureCode, StageRequest
from contracts.subjects import CANCEL_ALL, Endpoint, Rep, Req, ServiceSpec

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()

# How long a stopping replica lets its calls finish before it cancels them.
STOP_GRACE = 30.0


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
        runner = EndpointRunner(
            endpoint,
            handler,
            errors=errors or {},
            max_in_flight=max_in_flight,
            figures=self.figures.setdefault(endpoint.name, Figures()),
            hold=self._hold,
        )
        await self.service.add_endpoint(
            name=endpoint.name,
            subject=endpoint.subject,
            queue_group=endpoint.service.queue_group,
            handler=runner.on_request,
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

    async def _hold(self, call: Coroutine[Any, Any, None], request: StageRequest) -> None:
        """Run ``call`` as a task of its own, beaten for and cancellable until it ends."""
        task = asyncio.create_task(call)
        self._held[task] = request
        task.add_done_callback(self._release)
        await self._beat(request)

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
