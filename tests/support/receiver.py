"""A webhook receiver on loopback, for the tests that deliver jobs' webhooks."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Receiver:
    """A webhook receiver on loopback answering from a script (the last answer repeats)."""

    answers: list[tuple[int, dict[str, str]]]
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def answer(self) -> tuple[int, dict[str, str]]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port, answering 204 until told otherwise."""
    state = Receiver(answers=[(204, {})])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            headers["host"] = ", ".join(self.headers.get_all("host", []))  # exactly one
            state.seen.append((self.path, headers, body))
            status, answer = state.answer()
            time.sleep(float(answer.get("x-delay", 0)))  # a slow receiver
            self.send_response(status)
            for name, value in answer.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()
