"""Every HTTP request gets an id: the client's X-Request-ID when it is sound, else a new one.

The id is echoed in the ``X-Request-ID`` response header, set in ``bus.logs``'s
context so every log line carries it, and put in every error body.
"""

from __future__ import annotations

import re
import secrets
import uuid

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from bus.logs import REQUEST_ID

HEADER = "x-request-id"
# Letters, digits, '-' and '_' only: the id becomes part of NATS subjects and log lines.
_SOUND = re.compile(r"[A-Za-z0-9_-]{1,64}")


def from_header(value: str | None) -> str:
    """The client's id when it is sound, else a new one."""
    if value is not None and _SOUND.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current() -> str:
    """The id of the request this task serves (a new one outside any request)."""
    return REQUEST_ID.get() or uuid.uuid4().hex


def pipeline_key(request_id: str) -> str:
    """The key of one request's stored objects and subjects: its id and a random suffix,
    unique even when two clients send the same X-Request-ID (and found by the id)."""
    return f"{request_id}-{secrets.token_hex(4)}"


class RequestIdMiddleware:
    """Sets the request id for the handler and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(HEADER.encode())
        request_id = from_header(sent.decode("latin-1") if sent else None)
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
