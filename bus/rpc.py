"""Calling a service endpoint: send, wait for the reply or the replica's silence, resend."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro.request import ERROR_HEADER

from bus import tracing
from bus.liveness import Liveness
from bus.logs import REQUEST_ID, request_id_headers
from contracts.messages import Failure, FailureCode
from contracts.subjects import Endpoint, Rep, Req

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()


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


class ReplicaLost(CallError):
    """Every replica that took the call went silent (died or hung) before answering."""


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
            endpoint.service.label,
            attempt,
            liveness.attempts,
        )
    if time.monotonic() >= give_up:
        raise ServiceTimedOut(
            endpoint, f"the {endpoint.service.label} did not answer within {timeout:g} s"
        )
    raise ReplicaLost(endpoint, f"the {endpoint.service.label} stopped answering; try again later")


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
        raise ServiceNotRunning(endpoint, f"the {endpoint.service.label} is not running") from err
    except (TimeoutError, NatsTimeoutError) as err:
        raise ServiceTimedOut(
            endpoint, f"the {endpoint.service.label} did not answer within {timeout:g} s"
        ) from err
    if not msg.data and msg.headers and ERROR_HEADER in msg.headers:
        # An error micro produced itself (not one of ours): keep its text out of replies.
        log.error("%s answered a bare micro error: %s", endpoint.subject, msg.headers)
        raise RemoteFailure(
            Failure(code=FailureCode.INTERNAL, detail=f"the {endpoint.service.label} failed")
        )
    reply = endpoint.decode_reply(msg.data)
    if isinstance(reply, Failure):
        raise RemoteFailure(reply)
    return reply
