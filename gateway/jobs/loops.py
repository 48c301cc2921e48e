"""Stopping a background loop for sure."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def stopped(task: asyncio.Task[None], stop: asyncio.Event, wait: float = 10.0) -> None:
    """Stop a loop that checks ``stop``: flagged, cancelled, and waited for a bounded time.

    The flag is what ends it for sure: nats-py swallows a cancellation that arrives
    inside some of its calls (seen in a KV listing), and the loop would go on.
    """
    stop.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        log.warning("a background loop did not stop within %g s", wait)
