"""The root span of each analysis request, when traces are on (bus.tracing).

Its children are the stage calls (gateway.analysis), their NATS sends and, through the
message headers, the services' spans: one trace per request. The gateway is the edge:
a ``traceparent`` a client sends is not followed, so clients cannot choose trace ids.
"""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from bus import tracing
from bus.logs import REQUEST_ID
from gateway.errors import problem_of
from gateway.metrics import CLIENT_GONE_STATUS

# Pages, assets, probes and scrapes do no work across processes: a trace of one span
# each, every few seconds, that nobody reads. The analysis routes are the POSTs.
_UNTRACED = frozenset({"GET", "HEAD", "OPTIONS"})


class TraceMiddleware:
    """Runs each traced request in a new trace's SERVER span, named ``POST /analyze/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] in _UNTRACED or not tracing.active():
            await self.app(scope, receive, send)
            return
        route = scope.get("path_template") or scope["path"]
        status: list[int] = []

        async def status_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        with tracing.span(
            f"{scope['method']} {route}",
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, route),
            parent=Context(),  # a new trace
            status_on_error=False,  # judged by the status code, as HTTP servers are
        ) as span:
            try:
                await self.app(scope, receive, status_send)
            except BaseException as exc:
                # Answered by the app's exception handlers, outside this middleware.
                gone = isinstance(exc, asyncio.CancelledError)
                status.append(CLIENT_GONE_STATUS if gone else problem_of(exc).status)
                raise
            finally:
                code = status[0] if status else 500
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def _request_attributes(scope: HTTPScope, route: str) -> dict[str, AttributeValue]:
    """OpenTelemetry's HTTP server names, and the request id every process logs."""
    headers = dict(scope["headers"])
    attributes: dict[str, AttributeValue] = {
        "http.request.method": scope["method"],
        "http.route": route,
        "url.path": scope["path"],
        "url.scheme": scope["scheme"],
        "network.protocol.version": scope["http_version"],
        tracing.REQUEST_ID: REQUEST_ID.get() or "",
    }
    client = scope.get("client")
    if client is not None:
        attributes["client.address"] = client[0]
    agent = headers.get(b"user-agent")
    if agent is not None:
        attributes["user_agent.original"] = agent.decode("latin-1")
    return attributes
