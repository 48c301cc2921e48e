"""Processes started, watched and stopped together: the one place the dev stack signals a child.

`make run` (scripts/run_stack.py), the benchmarks and the tests start nats-server,
llama-server, the services and the gateway through a ProcessGroup, so that "SIGTERM, a
grace period, then SIGKILL" is written once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.fake_openai import FAKE_API_KEY, FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL = 2000  # characters of its log quoted when a process exits unexpectedly


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(nats_url: str, fake: FakeOpenAI | None = None, **extra: str) -> dict[str, str]:
    """Environment for running a service or the gateway as a real process: this one's,
    without its OPENAI_* and IMGSTORY_* settings, on `nats_url`, talking to `fake` if
    given, with `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMGSTORY_"))}
    env.update({"NATS_URL": nats_url, "PYTHONPATH": str(ROOT)})
    if fake is not None:
        env.update({"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": fake.base_url})
    env.update(extra)
    return env


class ProcessExited(RuntimeError):
    """A process of a group exited while it was meant to run."""

    def __init__(self, name: str, code: int, log_tail: str = "") -> None:
        super().__init__(f"{name} exited with {code}" + (f":\n{log_tail}" if log_tail else ""))
        self.name = name
        self.code = code


class ProcessGroup:
    """Processes started together and stopped together.

    Use it as a context manager (``with`` or ``async with``): ``start`` (or ``python``)
    each process under a name, ``exited()`` or ``check()`` to watch them; leaving the
    block stops every one still running: ``stop_signal`` (SIGTERM) to all at once, the
    newest first, then up to ``grace`` seconds for them to exit, then SIGKILL. A group
    is one tier: nest groups when some processes must outlive others (NATS under the
    services that drain through it).
    """

    def __init__(
        self, *, grace: float = 15.0, stop_signal: signal.Signals = signal.SIGTERM
    ) -> None:
        self.grace = grace
        self.stop_signal = stop_signal
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        self._logs: dict[str, Path] = {}

    def start(
        self, name: str, args: Sequence[str], *, log: Path | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start ``args`` as ``name`` and return its process. ``popen`` goes to
        subprocess.Popen; ``log`` takes both output streams (appended to), unless
        ``popen`` sends one elsewhere. Raises ValueError if ``name`` is still running."""
        if log is None:
            return self.adopt(name, subprocess.Popen(list(args), **popen))
        with log.open("ab") as output:  # the child keeps its own copy
            popen.setdefault("stdout", output)
            popen.setdefault("stderr", output)
            process = self.adopt(name, subprocess.Popen(list(args), **popen))
        self._logs[name] = log
        return process

    def python(self, name: str, module: str, *args: str, **options: Any) -> subprocess.Popen[Any]:
        """Start ``python -m module *args`` with this interpreter as ``name``, from the
        repository's root unless ``options`` says another ``cwd``; as ``start``."""
        options.setdefault("cwd", ROOT)
        return self.start(name, [sys.executable, "-m", module, *args], **options)

    def adopt(self, name: str, process: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        """Make ``process``, started elsewhere, one of the group's as ``name``; returns it.
        Raises ValueError if ``name`` is still running."""
        running = self.processes.get(name)
        if running is not None and running.poll() is None:
            raise ValueError(f"{name} is already running (pid {running.pid})")
        self.processes[name] = process
        return process

    def exited(self) -> dict[str, int]:
        """The exit code of each process that has exited, by name."""
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    def check(self) -> None:
        """Raise ProcessExited, with the end of its log, for a process that has exited."""
        for name, code in self.exited().items():
            log = self._logs.get(name)
            tail = log.read_text(errors="replace")[-LOG_TAIL:] if log else ""
            raise ProcessExited(name, code, tail)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` (no goodbye to anyone, as a lost machine) and reap it."""
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
        process.wait()

    def stop(self) -> None:
        """Stop every process still running: ``stop_signal`` to all, the newest first,
        then ``grace`` seconds for them to exit, then SIGKILL for those that did not."""
        running = [p for p in reversed(self.processes.values()) if p.poll() is None]
        for process in running:
            process.send_signal(self.stop_signal)
        deadline = time.monotonic() + self.grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ProcessGroup:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


async def ended(process: subprocess.Popen[Any], timeout: float) -> int:
    """Wait, without blocking the event loop, until ``process`` exits; its exit code.

    Raises TimeoutError if it still runs after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while (code := process.poll()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.args!r} still runs after {timeout} s")
        await asyncio.sleep(0.05)
    return code


async def wait_for_port(
    port: int, process: subprocess.Popen[Any] | asyncio.subprocess.Process, timeout: float = 15
) -> None:
    """Return once something accepts connections on the loopback ``port``.

    Raises RuntimeError if ``process`` exits first or nothing listens within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            code = process.poll() if isinstance(process, subprocess.Popen) else process.returncode
            if code is not None:
                raise RuntimeError(f"the process exited at start-up with code {code}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listened on port {port} within {timeout} s") from None
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return
