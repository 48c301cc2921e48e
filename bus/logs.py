"""Log lines that say which request they are about, as text or as one JSON object a line.

``REQUEST_ID`` holds the id of the request the current task works for: the gateway
sets it per HTTP request, a service per call it serves (from the ``X-Request-ID`` NATS
header the caller sent). Every line logged while it is set carries it, so one request
can be followed through every process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from bus.settings import Env

REQUEST_ID: ContextVar[str | None] = ContextVar("imgstory_request_id", default=None)

# The NATS header that carries REQUEST_ID from a caller to the service it calls.
REQUEST_ID_HEADER = "X-Request-ID"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
FORMATS = ("text", "json")


def log_format(env: Env) -> str:
    """``IMGSTORY_LOG_FORMAT``: ``text`` (the default) or ``json``; raises SettingsError."""
    return env.choice("IMGSTORY_LOG_FORMAT", "text", FORMATS)


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


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: what log collectors read without rules.

    Fields: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``service``, ``logger``,
    ``message``, ``request_id`` (null outside a request), and ``exc_info`` /
    ``stack_info`` as single strings when the record has them.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id in (None, "-") else request_id,
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # ensure_ascii: escapes U+2028 and the like too, which some readers split lines on.
        return json.dumps(line, default=str)


def configure_logging(
    level: int = logging.INFO, *, json_lines: bool = False, service: str = "imgstory"
) -> None:
    """Log to stderr with the request id on every line, in every ImgStory process.

    Text is a line for people; ``json_lines`` gives one object a line naming
    ``service``, and makes warnings and uncaught exceptions logged records too, so
    nothing else reaches stderr as bare text.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if json_lines else logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.captureWarnings(json_lines)
    sys.excepthook = _log_uncaught if json_lines else sys.__excepthook__


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("imgstory").critical("uncaught exception", exc_info=(kind, error, traceback))
