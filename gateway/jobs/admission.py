"""Who submits a job, and whether the queue takes one more of theirs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bus.jobs import JobStore
from gateway.config import Jobs

_SUBMITTER_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class QueueFull(Exception):
    """Too many jobs wait already (in all, or the caller's): the message is for the client."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Submitter:
    """Who submits: the owner a job is kept for (None with keys off), and whose queue."""

    owner: str | None
    queue: str

    @classmethod
    def of(cls, caller: str | None, keys_on: bool) -> Submitter:
        token = _SUBMITTER_UNSAFE.sub("_", caller or "anyone")[:64] or "anyone"
        return cls(owner=caller if keys_on else None, queue=token)


async def admit(store: JobStore, limits: Jobs, submitter: Submitter) -> None:
    """Raises QueueFull when the queue (in all, or the submitter's) is at its bound."""
    if not (limits.max_queued or limits.max_queued_per_key):
        return
    overall, mine = await store.unfinished(submitter.queue)
    if limits.max_queued_per_key and mine >= limits.max_queued_per_key:
        raise QueueFull(
            f"this caller already has {mine} jobs queued or running; wait for one to end",
            retry_after=10,
        )
    if limits.max_queued and overall >= limits.max_queued:
        raise QueueFull(
            "the queue is full; try again shortly",
            retry_after=10,
        )
