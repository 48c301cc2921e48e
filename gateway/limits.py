"""Who may start an analysis, and how many: API keys, a rate per key, caps on analyses in flight.

Everything is counted in this process's memory, so every limit is per gateway replica:
behind a load balancer over N gateways a key may send N times the rate.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.status_codes import (
    HTTP_401_UNAUTHORIZED,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from gateway.auth import key_label, presented_keys
from gateway.config import Admission
from gateway.errors import Problem, note_rejection, send_problem
from gateway.request_ids import current

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CALLER_KEY = "imgstory_caller"  # where the gate leaves who the caller is, in the scope's state

# Until an analysis has finished, how long one is taken to last, for Retry-After.
_FIRST_GUESS_SECONDS = 10.0
_MAX_RETRY_AFTER = 60.0


def _seconds(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


class SlidingWindow:
    """At most ``limit`` requests per ``window`` seconds for each caller, counted exactly.

    Keeps the time of each request in the window: ``limit`` floats per active caller.
    """

    def __init__(self, limit: int, window: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: dict[str, deque[float]] = {}
        self._swept = clock()

    def wait(self, who: str) -> float:
        """Seconds until ``who`` may send again: 0 when a request may go now."""
        now = self._clock()
        self._sweep(now)
        times = self._times.get(who)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def take(self, who: str) -> None:
        """Count a request of ``who`` now (after ``wait`` said 0)."""
        self._times.setdefault(who, deque()).append(self._clock())

    def _sweep(self, now: float) -> None:
        # Callers seen once (client addresses, say) must not stay in memory for ever.
        if now - self._swept < self.window:
            return
        self._swept = now
        for who in [
            w for w, times in self._times.items() if not times or times[-1] <= now - self.window
        ]:
            del self._times[who]


@dataclass(eq=False)
class Slot:
    """One analysis in flight, held from admission until its answer has been sent."""

    who: str
    started: float


@dataclass
class InFlight:
    """Counts analyses in flight, overall and per caller; 0 for a cap means none."""

    overall: int
    per_caller: int
    clock: Clock = time.monotonic
    _slots: dict[str, set[Slot]] = field(default_factory=dict)
    _count: int = 0
    _typical: float = _FIRST_GUESS_SECONDS  # a moving average of how long analyses last

    def full(self, who: str) -> tuple[str, float] | None:
        """None when ``who`` may start one more; else why not and seconds until one may end."""
        mine = self._slots.get(who, set())
        if self.per_caller and len(mine) >= self.per_caller:
            return "caller", self._retry_after(mine)
        if self.overall and self._count >= self.overall:
            return "overall", self._retry_after(s for slots in self._slots.values() for s in slots)
        return None

    def enter(self, who: str) -> Slot:
        slot = Slot(who, self.clock())
        self._slots.setdefault(who, set()).add(slot)
        self._count += 1
        return slot

    def leave(self, slot: Slot) -> None:
        mine = self._slots[slot.who]
        mine.remove(slot)
        if not mine:
            del self._slots[slot.who]
        self._count -= 1
        self._typical = 0.8 * self._typical + 0.2 * (self.clock() - slot.started)

    def _retry_after(self, slots: Iterable[Slot]) -> float:
        """When the oldest of ``slots`` may end, going by how long analyses have lasted."""
        oldest = min(slot.started for slot in slots)
        return min(max(self._typical - (self.clock() - oldest), 1.0), _MAX_RETRY_AFTER)


class Gate:
    """Decides, for each request to a guarded route, to let it in (a Slot) or why not."""

    def __init__(
        self,
        admission: Admission,
        guarded: Collection[object],
        clock: Clock = time.monotonic,
        identified: Collection[object] = (),
    ) -> None:
        self.admission = admission
        self._guarded = {getattr(handler, "fn", handler) for handler in guarded}
        # Routes that need the caller's key (a job's reads) but start no work.
        self._identified = {getattr(handler, "fn", handler) for handler in identified}
        rate = admission.rate_per_minute
        self.rate = SlidingWindow(rate, admission.rate_window, clock) if rate else None
        self.in_flight = InFlight(admission.max_in_flight, admission.max_in_flight_per_key, clock)

    def guards(self, scope: Scope) -> bool:
        # By handler, not by path: every spelling of a path that reaches it is guarded.
        handler = scope.get("route_handler")
        return getattr(handler, "fn", None) in self._guarded

    def identifies(self, scope: Scope) -> bool:
        handler = scope.get("route_handler")
        return getattr(handler, "fn", None) in self._identified

    def identify(self, scope: HTTPScope) -> str | Problem:
        """The caller, kept in the scope's state for the handler (see ``caller``), or a 401."""
        who = self._caller(scope)
        if isinstance(who, Problem):
            log.info("%s %s refused (401): %s", scope["method"], scope["path"], who.detail)
        else:
            scope.setdefault("state", {})[CALLER_KEY] = who
        return who

    def admit(self, scope: HTTPScope) -> Slot | Problem:
        """A slot to hold while the request is served, or the answer refusing it (logged,
        naming the caller by its key's digest or its address, never by the key)."""
        who = self.identify(scope)
        if isinstance(who, Problem):
            return who
        refusal = None
        if self.rate is not None and (wait := self.rate.wait(who)) > 0:
            refusal = self._rate_limited(wait)
        elif (full := self.in_flight.full(who)) is not None:
            refusal = self._saturated(*full)
        if refusal is not None:
            log.info(
                "%s %s from %s refused (%d): %s",
                scope["method"],
                scope["path"],
                who,
                refusal.status,
                refusal.detail,
            )
            return refusal
        if self.rate is not None:
            self.rate.take(who)
        return self.in_flight.enter(who)

    def leave(self, slot: Slot) -> None:
        self.in_flight.leave(slot)

    def _caller(self, scope: HTTPScope) -> str | Problem:
        """The key's id when keys are on, else the client's address; or a 401."""
        keys = self.admission.api_keys
        if not keys:
            client = scope.get("client")
            return f"address {client[0] if client else 'unknown'}"
        offered = presented_keys(Headers.from_scope(scope))
        for key in offered:
            if (key_id := keys.identify(key)) is not None:
                return key_label(key_id)
        if offered:
            return Problem(
                HTTP_401_UNAUTHORIZED,
                "the API key is not accepted",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                "unauthorized",
            )
        return Problem(
            HTTP_401_UNAUTHORIZED,
            "an API key is needed: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
            "unauthorized",
        )

    def _rate_limited(self, wait: float) -> Problem:
        window = self.admission.rate_window
        per = "a minute" if window == 60 else f"{window:g} seconds"
        caller = "API key" if self.admission.api_keys else "client address"
        return Problem(
            HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests: at most {self.admission.rate_per_minute} per {caller} in {per}",
            {"Retry-After": _seconds(wait)},
            "rate_limited",
        )

    def _saturated(self, which: str, wait: float) -> Problem:
        if which == "caller":
            caller = "API key" if self.admission.api_keys else "client address"
            detail = (
                f"this {caller} already has {self.admission.max_in_flight_per_key} analyses "
                "in flight; wait for one to finish"
            )
        else:
            detail = "the server is busy with as many analyses as it takes; try again shortly"
        return Problem(
            HTTP_503_SERVICE_UNAVAILABLE, detail, {"Retry-After": _seconds(wait)}, "saturated"
        )


class AdmissionMiddleware:
    """Lets a request to a guarded route in, holding its slot until the answer is sent,
    or answers 401, 429 or 503 at once without reading its body."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        if not self.gate.guards(scope):
            who = self.gate.identify(scope) if self.gate.identifies(scope) else None
            if isinstance(who, Problem):
                assert who.rejection is not None
                note_rejection(scope, who.rejection)
                await send_problem(send, who, current())
                return
            await self.app(scope, receive, send)
            return
        verdict = self.gate.admit(scope)
        if isinstance(verdict, Problem):
            assert verdict.rejection is not None  # every refusal of the gate names its reason
            note_rejection(scope, verdict.rejection)
            await send_problem(send, verdict, current())
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave(verdict)


def admission_middleware(
    admission: Admission, guarded: Collection[object], identified: Collection[object] = ()
) -> DefineMiddleware:
    """The middleware for an app: one gate, shared by every route's copy of the middleware.

    ``guarded`` routes start work (keys, rate and caps); ``identified`` ones only need
    the caller's key.
    """
    gate = Gate(admission, guarded, identified=identified)
    return DefineMiddleware(AdmissionMiddleware, gate=gate)


def caller(scope: Scope) -> str | None:
    """Who the gate found the caller to be: a key's label, or an address with keys off."""
    found = scope.get("state", {}).get(CALLER_KEY)
    return found if isinstance(found, str) else None
