"""The only shared NATS code: call an endpoint, and serve one on a micro service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro import add_service
from nats.micro.request import ERROR_HEADER, Request
from nats.micro.service import Service

from contracts.messages import Failure, FailureCode, Progress, Stage
from contracts.subjects import Endpoint, Rep, Req, ServiceSpec

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
    attempt; while the bus is known to be down those attempts are news to no one.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False

    async def error(self, err: Exception) -> None:
        if self.down and isinstance(err, OSError | TimeoutError | NatsError):
            return
        log.warning("%s: NATS: %s", self.name, str(err) or type(err).__name__)

    async def disconnected(self) -> None:
        if not self.down:
            self.down = True
            log.warning("%s lost its NATS connection; reconnecting", self.name)

    async def reconnected(self) -> None:
        self.down = False
        log.info("%s reconnected to NATS", self.name)


async def connect(url: str, name: str) -> Client:
    """Connect to NATS as every ImgStory process does: reconnect for ever, log tersely.

    Raises nats.errors.Error subclasses only for bad URLs; an unreachable server is
    retried until it answers.
    """
    story = _ConnectionLog(name)
    return await nats.connect(
        servers=server_list(url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        error_cb=story.error,
        disconnected_cb=story.disconnected,
        reconnected_cb=story.reconnected,
    )


class CallError(Exception):
    """A call to a service endpoint did not produce a reply."""

    def __init__(self, endpoint: Endpoint[Any, Any], detail: str) -> None:
        super().__init__(detail)
        self.endpoint = endpoint
        self.detail = detail


class ServiceNotRunning(CallError):
    """No replica of the service is subscribed (NATS answered 'no responders')."""


class ServiceTimedOut(CallError):
    """The service took longer than the caller was willing to wait."""


class BusUnavailable(CallError):
    """This process is not connected to NATS (it is reconnecting): nothing can be sent."""


class RemoteFailure(Exception):
    """A service answered with a Failure: ``call`` raises it with the envelope."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def _label(endpoint: Endpoint[Any, Any]) -> str:
    return endpoint.service.name.removeprefix("imgstory-") + " service"


async def call(nc: Client, endpoint: Endpoint[Req, Rep], request: Req, *, timeout: float) -> Rep:
    """Send ``request`` to ``endpoint`` and return its result.

    Raises RemoteFailure when the service answers with a Failure, ServiceNotRunning
    when no replica listens, ServiceTimedOut after ``timeout``, and BusUnavailable at
    once while the connection to NATS is down (rather than queueing the request).
    """
    if not isinstance(request, endpoint.request_type):
        raise TypeError(f"{endpoint.subject} takes {endpoint.request_type.__name__}")
    if not nc.is_connected:
        raise BusUnavailable(endpoint, "the message bus (NATS) is unavailable")
    try:
        msg = await nc.request(endpoint.subject, _encoder.encode(request), timeout=timeout)
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


class Server:
    """A micro service whose endpoints decode contracts, run a handler and reply.

    Each endpoint runs up to ``max_in_flight`` requests at once; further requests wait
    in this replica's subscription while other replicas in the queue group take theirs.
    """

    def __init__(self, nc: Client, service: Service) -> None:
        self.nc = nc
        self.service = service
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, nc: Client, spec: ServiceSpec) -> Server:
        service = await add_service(
            nc,
            name=spec.name,
            version=spec.version,
            description=spec.description,
            queue_group=spec.queue_group,
        )
        return cls(nc, service)

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

        async def respond(req: Request) -> None:
            try:
                reply = await handler(endpoint.decode_request(req.data))
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                failure = Failure(
                    code=FailureCode.INTERNAL, detail=f"malformed {endpoint.name} request: {err}"
                )
            except tuple(error_codes) as err:
                failure = _failure_for(err, error_codes)
            except Exception:
                # The task boundary: micro never sees this task, so answer for it.
                log.exception("%s failed", endpoint.subject)
                failure = Failure(
                    code=FailureCode.INTERNAL, detail=f"the {_label(endpoint)} failed unexpectedly"
                )
            else:
                await req.respond(_encoder.encode(reply))
                return
            await req.respond_error(
                str(failure.code.status), failure.detail, data=_encoder.encode(failure)
            )

        async def on_request(req: Request) -> None:
            # Waiting here (not in the task) keeps surplus requests queued in NATS.
            await slots.acquire()
            task = asyncio.create_task(respond(req))
            self._tasks.add(task)
            task.add_done_callback(done)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            slots.release()

        await self.service.add_endpoint(
            name=endpoint.name,
            subject=endpoint.subject,
            queue_group=endpoint.service.queue_group,
            handler=on_request,
        )
        # Once add() returns, the server knows the subscription: requests will reach it.
        await self.nc.flush()

    async def stop(self) -> None:
        """Stop taking requests, then let those in flight finish."""
        await self.service.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


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

    async def stage(self, stage: Stage, detail: str = "") -> None:
        await self._publish(Progress(request_id=self.request_id, stage=stage, detail=detail))

    def text_from_thread(self, stage: Stage, piece: str) -> None:
        """Publish a piece of generated text; safe to call from a worker thread."""
        if self.subject is None or not piece:
            return
        progress = Progress(request_id=self.request_id, stage=stage, text=piece)
        asyncio.run_coroutine_threadsafe(self._publish(progress), self._loop)

    async def _publish(self, progress: Progress) -> None:
        if self.subject is not None:
            await self.nc.publish(self.subject, _encoder.encode(progress))
