"""A nats-server with JetStream, as `make run`, the benchmarks and the tests run it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from devstack.processes import ProcessGroup


def nats_server_binary() -> str:
    """The nats-server on PATH, or the one the virtualenv installed.

    Raises FileNotFoundError if there is neither.
    """
    found = shutil.which("nats-server") or shutil.which(
        "nats-server", path=str(Path(sys.executable).parent)
    )
    if not found:
        raise FileNotFoundError("nats-server not found: run `make test`, which installs it")
    return found


class NatsServer:
    """A nats-server with JetStream on a free (or given) port and a store of its own."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        config: Path | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        log_to: IO[str] | None = None,
    ) -> None:
        """``port`` None takes a free one; a fixed port lets a stopped server come back.

        ``host`` is the address it listens on; ``config`` a nats-server configuration
        file (its address, port and store are overridden by ours; JetStream is on only if
        it says so); ``env`` the server's environment (the passwords it reads); ``args``
        further nats-server flags; ``log_to`` where its log goes (None: nowhere).
        """
        self.store_dir = store_dir
        self.port = port
        self.host = host
        self.config = config
        self.env = env
        self.args = args
        self.log_to = log_to
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self._group = ProcessGroup(grace=10)

    def start(self) -> NatsServer:
        """Start the server and wait until it listens.

        Raises FileNotFoundError if nats-server is not installed, RuntimeError if it
        does not start.
        """
        self.process = self._group.start(
            "nats-server",
            [
                nats_server_binary(),
                # A configuration file says itself whether JetStream is on.
                *(["-c", str(self.config)] if self.config else ["-js"]),
                "-a",
                self.host,
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
        assert self.process.stderr is not None  # piped just above
        for line in self.process.stderr:
            self._log(line)
            found = re.search(r"Listening for client connections on (\S+):(\d+)", line)
            if found:
                self.url = f"nats://{self.host}:{found.group(2)}"
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("nats-server did not start")
        # Keep reading its log so the pipe never fills and blocks the server.
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()
        return self

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._log(line)

    def _log(self, line: str) -> None:
        if self.log_to is not None:
            self.log_to.write(line)
            self.log_to.flush()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); it may be started again."""
        self._group.stop()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
