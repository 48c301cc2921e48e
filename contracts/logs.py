"""Log lines that say which request they are about.

``REQUEST_ID`` holds the id of the request the current task works for: the gateway
sets it per HTTP request, a service per call it serves. Every line logged while it is
set carries it, so one request can be followed through every process.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("imgstory_request_id", default=None)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


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
