"""Backend-neutral errors raised by chat model backends."""

from __future__ import annotations


class ModelError(Exception):
    """Base class for every failure of a chat model call.

    The message is always human readable and safe to show to users: it never
    contains credentials or the repr of a library exception.
    """


class RateLimited(ModelError):
    """The provider asked us to slow down; `retry_after` is its hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(ModelError):
    """The model could not be used: server error, network failure, timeout or bad configuration."""


class ModelRejected(ModelError):
    """The provider refused the request because of what the user sent (bad input, content policy)."""
