"""How a caller tells a replica that holds its call from one that died: heartbeats."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

# Replicas beat this often for each call they hold; a caller's window must be wider.
HEARTBEAT_INTERVAL = 1.0


class Heartbeats:
    """When each watched call was last heard of, fed from one request's heartbeat subject."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._heard: dict[str, float] = {}

    def beat(self, call_id: str) -> None:
        if call_id in self._heard:
            self._heard[call_id] = time.monotonic()

    async def silence(self, call_id: str, window: float) -> None:
        """Return once ``call_id`` has not been heard of for ``window`` seconds.

        The clock starts now: the first beat is due within a window of sending. A call
        id is watched by one caller at a time (ValueError otherwise).
        """
        if call_id in self._heard:
            raise ValueError(f"call {call_id} is already watched")
        self._heard[call_id] = time.monotonic()
        try:
            while (quiet := time.monotonic() - self._heard[call_id]) < window:
                await asyncio.sleep(window - quiet)
        finally:
            del self._heard[call_id]


@dataclass(frozen=True)
class Liveness:
    """How a caller notices a replica that died or hangs while it holds the call."""

    heartbeats: Heartbeats
    window: float = 3.0  # silence this long means the replica is gone
    attempts: int = 3  # sends in all; NATS gives each to whichever replica it picks
