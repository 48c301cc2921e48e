"""One endpoint of a replica: decode a call, run its handler in a slot, reply or fail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Generic

import msgspec
from nats.micro.request import Request

from bus import tracing
from bus.logs import REQUEST_ID, request_id_from
from contracts.messages import Failure, FailureCode, StageRequest
from contracts.subjects import Endpoint, Rep, Req

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()

# How a runner hands its replica a call's work to hold (beaten for, cancellable).
Hold = Callable[[Coroutine[Any, Any, None], StageRequest], Awaitable[None]]


class Figures(msgspec.Struct):
    """What one endpoint of a replica has done since it started (its $SRV.STATS data)."""

    served: int = 0
    failed: dict[str, int] = msgspec.field(default_factory=dict)  # by FailureCode
    cancelled: int = 0  # dropped: the caller sent Cancel, or the replica stopped
    seconds: float = 0.0  # in the handler, queueing for a slot not counted


class EndpointRunner(Generic[Req, Rep]):
    """Serves one endpoint: each call decoded, run by ``handler`` in one of ``slots``
    within its deadline, counted in ``figures`` and answered with the reply or a Failure.

    Exceptions of a type in ``errors`` (or a subclass) become Failures with its code;
    any other becomes an internal Failure, its details kept in the log.
    """

    def __init__(
        self,
        endpoint: Endpoint[Req, Rep],
        handler: Callable[[Req], Awaitable[Rep]],
        *,
        errors: Mapping[type[Exception], FailureCode],
        max_in_flight: int,
        figures: Figures,
        hold: Hold,
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.error_codes = dict(errors)
        self.slots = asyncio.Semaphore(max_in_flight)
        self.figures = figures
        self._hold = hold

    async def on_request(self, req: Request) -> None:
        """micro's handler: decode the call and hand it to the replica to hold."""
        try:
            request = self.endpoint.decode_request(req.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            failure = Failure(
                code=FailureCode.INTERNAL, detail=f"malformed {self.endpoint.name} request: {err}"
            )
            await _respond_failure(req, failure)
            return
        if request.deadline is not None and request.deadline <= time.time():
            log.info(
                "request %s: %s arrived after its deadline",
                request.request_id,
                self.endpoint.name,
            )
            return
        # A task at once (not after a slot frees): queued calls are beaten for too.
        # Its span is the child of the caller's send, whose context the headers carry.
        request_id = request_id_from(req.headers, request.request_id)
        traced = tracing.served(
            self.serve(req, request), req.headers, self.endpoint.subject, request_id
        )
        await self._hold(traced, request)

    async def serve(self, req: Request, request: Req) -> None:
        """Run the handler in a slot within the deadline and answer; a cancel propagates."""
        # This task's log lines name the request: the caller's id from the headers,
        # else (a caller that sends none) the one in the message.
        REQUEST_ID.set(request_id_from(req.headers, request.request_id))
        remaining = None if request.deadline is None else request.deadline - time.time()
        started = None
        try:
            async with asyncio.timeout(remaining) as deadline:
                async with self.slots:
                    started = time.perf_counter()
                    reply = await self.handler(request)
        except asyncio.CancelledError:
            self.figures.cancelled += 1
            raise
        except tuple(self.error_codes) as err:
            failure = self._failure_for(err)
        except Exception as err:
            if isinstance(err, TimeoutError) and deadline.expired():
                failure = self._abandoned(request)
            else:
                # The task boundary: micro never sees this task, so answer for it.
                log.exception("%s failed", self.endpoint.subject)
                failure = Failure(
                    code=FailureCode.INTERNAL,
                    detail=f"the {self.endpoint.service.label} failed unexpectedly",
                )
        else:
            self.figures.served += 1
            await req.respond(_encoder.encode(reply))
            return
        finally:
            if started is not None:
                self.figures.seconds += time.perf_counter() - started
        self.figures.failed[failure.code] = self.figures.failed.get(failure.code, 0) + 1
        tracing.failed(failure.code, failure.detail)
        await _respond_failure(req, failure)

    def _failure_for(self, err: Exception) -> Failure:
        """The Failure of the code ``errors`` gives ``err``'s type (or its nearest base)."""
        code = next(self.error_codes[t] for t in type(err).__mro__ if t in self.error_codes)
        retry_after = getattr(err, "retry_after", None)
        return Failure(code=code, detail=str(err) or code.value, retry_after=retry_after)

    def _abandoned(self, request: Req) -> Failure:
        """The Failure of a call whose deadline passed while it was queued or running."""
        log.info("request %s: %s abandoned at its deadline", request.request_id, self.endpoint.name)
        return Failure(
            code=FailureCode.UPSTREAM_UNAVAILABLE,
            detail=f"the {self.endpoint.service.label} ran out of time",
        )


async def _respond_failure(req: Request, failure: Failure) -> None:
    """Answer with the envelope, and with micro's error headers so NATS tools see it."""
    await req.respond_error(str(failure.code.status), failure.detail, data=_encoder.encode(failure))
