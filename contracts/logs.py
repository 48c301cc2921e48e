"""Log lines that say which request they are about.

``REQUEST_ID`` holds the id of the request the current task works for: the gateway
sets it per HTTP request, a service per call it serves (from the ``X-Request-ID`` NATS
header the caller sent). Every line logged while it is set carries it, so one request
can be followed through every process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("imgstory_request_id", default=None)

# The NATS header that carries REQUEST_ID from a caller to the service it calls.
REQUEST_ID_HEADER = "X-Request-ID"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def request_id_headers() -> dict[str, str] | None:
    """NATS headers carrying the current request id, or None outside any request."""
    request_id = REQUEST_ID.get()
    return None if request_id is None else {REQUEST_ID_HEADER: request_id}


def request_id_from(headers: Mapping[str, str] | None, fallback: str) -> str:
    """The request id a call's headers carry, else ``fallback`` (callers that send none)."""
    return (headers or {}).get(REQUEST_ID_HEADER) or fallback


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id ("-" outside any request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with the request id on every line, in every ImgStory process."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
