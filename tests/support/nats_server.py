"""A throwaway nats-server with JetStream, as the tests and the benchmark run it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def nats_server_binary() -> str:
    """The nats-server on PATH, or the one the virtualenv installed; fails the test if neither."""
    found = shutil.which("nats-server") or shutil.which(
        "nats-server", path=str(Path(sys.executable).parent)
    )
    if not found:
        pytest.fail("nats-server not found: run `make test`, which installs it")
    return found


class NatsServer:
    """A throwaway nats-server with JetStream on a free port and a temp store."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        *,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """``port`` None takes a free one; a fixed port lets a stopped server come back.

        ``config`` is a nats-server configuration file (its address, port and store are
        overridden by ours; JetStream is on only if it says so); ``env`` the server's environment (the passwords it reads);
        ``args`` further nats-server flags.
        """
        self.store_dir = store_dir
        self.port = port
        self.config = config
        self.env = env
        self.args = args
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> NatsServer:
        """Start the server and wait until it listens; raises RuntimeError if it does not."""
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                # A configuration file says itself whether JetStream is on.
                *(["-c", str(self.config)] if self.config else ["-js"]),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port or -1),
                "-sd",
                str(self.store_dir),
                *self.args,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        deadline = time.monotonic() + 20
        self.url = ""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            found = re.search(r"Listening for client connections on (\S+):(\d+)", line)
            if found:
                self.url = f"nats://127.0.0.1:{found.group(2)}"
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("nats-server did not start")
        # Keep draining its log so the pipe never fills and blocks the server.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
