"""Stopping blocking work: the service sets a token when a call is cancelled, the work checks it.

Cancelling the asyncio task that awaits a worker thread does not stop the thread; the
domain code (video decoding, perception, OCR, transcription) checks a CancelToken
between steps and raises Cancelled at its next check instead. Work that waits on
something else, such as a tesseract process, registers a way to stop it at once.
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Cancelled(Exception):
    """The work stopped because its caller no longer wants it (deadline passed or Cancel)."""


class CancelToken:
    """A flag set once, from any thread, and checked by the work; it never clears."""

    def __init__(self) -> None:
        self._set = threading.Event()
        self._lock = threading.Lock()
        self._stops: list[Callable[[], None]] = []

    def cancel(self) -> None:
        """Set the token and run the stops registered with on_cancel, in this thread."""
        with self._lock:
            self._set.set()
            stops, self._stops = self._stops, []
        for stop in stops:
            stop()

    @property
    def cancelled(self) -> bool:
        return self._set.is_set()

    def check(self) -> None:
        """Raise Cancelled if the token has been set."""
        if self._set.is_set():
            raise Cancelled("the work was cancelled")

    @contextmanager
    def on_cancel(self, stop: Callable[[], None]) -> Iterator[None]:
        """Call stop if the token is set while inside (at once if it already is).

        stop runs in the thread that cancels, the event loop's: it must be quick and
        must not raise (killing a process is).
        """
        with self._lock:
            late = self._set.is_set()
            if not late:
                self._stops.append(stop)
        if late:
            stop()
        try:
            yield
        finally:
            with self._lock:
                if stop in self._stops:
                    self._stops.remove(stop)
