"""A scriptable fake OpenAI-compatible HTTP server on loopback, for driving the real `openai` SDK in tests."""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import io
import itertools
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

# The key the tests give clients of the fake: shaped like a real one, worth nothing.
FAKE_API_KEY = "sk-test-not-a-real-key"

# Control endpoints for a benchmark in another process (see FakeOpenAI.stats).
STATS_PATH = "/fake/stats"
RESET_PATH = "/fake/reset"

# Tokens the fake charges for each image part, whatever its size (OpenAI's "low" detail price).
IMAGE_TOKENS = 85

THAI_ANSWER = (
    "แสงสุดท้ายของวัน\n\n"
    "ยามเย็นที่ริมแม่น้ำ แสงสีทองค่อย ๆ ลับขอบฟ้า เด็กหญิงคนหนึ่งนั่งมองเรือลำเล็กแล่นผ่านไปอย่างช้า ๆ "
    "เธอยิ้มให้กับลมเย็นที่พัดมาเบา ๆ และรู้สึกว่าโลกทั้งใบกำลังหยุดนิ่งเพื่อเธอ\n\n"
    "เมื่อดวงดาวดวงแรกปรากฏขึ้น เธอกระซิบความฝันของตัวเองให้สายน้ำฟัง แล้วเดินกลับบ้านพร้อมหัวใจที่อบอุ่น"
)

_STATUS_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The request was invalid."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Permission denied."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached, please try again later."),
}


@dataclass(frozen=True)
class Reply:
    """Answer with `text` (None sends a null content). Token counts default to the fake's counting rule."""

    text: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    usage: bool = True
    refusal: str | None = None
    pace: float = 0.0  # seconds between the pieces of a streamed answer (a slow writer)


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error. `body` None sends an OpenAI-style {"error": {...}} body."""

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class Raw:
    """Answer with exactly these bytes (str is UTF-8 encoded), for malformed or unusual servers."""

    body: str | bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before answering with `then` (None: the default responder)."""

    seconds: float
    then: Reply | Status | Raw | None = None


Step = Reply | Status | Raw | Delay


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received. Indexing it (`req["messages"]`) reads the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default) if isinstance(self.body, dict) else default

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.get("messages") or [])

    @property
    def image_urls(self) -> list[str]:
        """The image URLs of every image part, in order."""
        return [
            part["image_url"]["url"]
            for part in _parts(self.messages)
            if part.get("type") == "image_url"
        ]

    @property
    def text(self) -> str:
        """All text of all messages, joined by newlines."""
        return "\n".join(_texts(self.messages))


def _parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            parts.extend(part for part in content if isinstance(part, dict))
    return parts


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    return [str(part.get("text", "")) for part in _parts(messages) if part.get("type") == "text"]


def _system_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_texts([m for m in messages if m.get("role") in ("system", "developer")]))


def wants_thai(messages: list[dict[str, Any]]) -> bool:
    """The default responder's rule: a system message that mentions both "Thai" and translating."""
    system = _system_text(messages).lower()
    return "thai" in system and "translat" in system


_THAI_BLOCKS = THAI_ANSWER.split("\n\n")


def thai_answer(messages: list[dict[str, Any]]) -> str:
    """The default translation: a Thai block for every block of the text between the
    last <story> tags (a short one gets the title), so a story translated whole comes
    back as THAI_ANSWER and one translated a paragraph at a time as its paragraphs."""
    text = "\n".join(_texts(messages))
    english = text.rpartition("<story>")[2].partition("</story>")[0]
    blocks = [b for b in re.split(r"\n\s*\n", english.strip()) if b.strip()] or [""]
    if len(blocks) == len(_THAI_BLOCKS):
        return THAI_ANSWER
    thai = []
    for block in blocks:
        words = len(block.split())
        thai.append(_THAI_BLOCKS[0] if words <= 8 else _THAI_BLOCKS[1 + words % 2])
    return "\n\n".join(thai)


# The Thai spellings the default responder gives the names it is asked to spell
# (translation_service.names); any other name gets no Thai spelling.
NAME_SPELLINGS = {"Mara": "มารา", "Tom": "ทอม", "Tom Baker": "ทอม เบเกอร์"}


def wants_spelling(messages: list[dict[str, Any]]) -> bool:
    """The default responder's rule: a system message that asks to transliterate a name."""
    return "transliterate" in _system_text(messages).lower()


def default_answer(messages: list[dict[str, Any]]) -> str:
    """What the fake says when no step is scripted: a name's Thai spelling when asked for
    one, Thai for translations, else an English story."""
    if wants_spelling(messages):
        name = _texts(messages)[-1].strip()
        return NAME_SPELLINGS.get(name, f"{name} has no Thai spelling here.")
    if wants_thai(messages):
        return thai_answer(messages)
    images = sum(1 for part in _parts(messages) if part.get("type") == "image_url")
    noun = "picture" if images == 1 else "pictures"
    return (
        "The Quiet Harbour\n\n"
        f"This is a story about {images} {noun}. Morning light spilled over the harbour as "
        "Mara tied the last rope, and the gulls argued over the fishing boats.\n\n"
        "By evening the sea had turned to copper, and she walked home smiling."
    )


@dataclass(frozen=True)
class ReceivedImage:
    """One image part the fake received: its model and detail, and what its data URL held.

    `width` and `height` are None for a URL that is not a decodable base64 image.
    """

    model: str
    detail: str | None
    bytes: int
    width: int | None
    height: int | None


def received_images(request: RecordedRequest) -> list[ReceivedImage]:
    """The images of one chat request, sized from their headers (nothing is decoded)."""
    model = str(request.get("model") or "")
    images = []
    for part in _parts(request.messages):
        if part.get("type") != "image_url":
            continue
        image_url = part.get("image_url")
        image_url = image_url if isinstance(image_url, dict) else {}
        url = str(image_url.get("url") or "")
        data = b""
        size: tuple[int, int] | None = None
        if url.startswith("data:") and ";base64," in url:
            try:
                data = base64.b64decode(url.partition(";base64,")[2], validate=True)
                # Image.open reads the header only; the pixels stay undecoded.
                with Image.open(io.BytesIO(data)) as img:
                    size = img.size
            except (ValueError, OSError, Image.DecompressionBombError):
                # Not base64 (binascii.Error is a ValueError) or not an image Pillow reads.
                size = None
        images.append(
            ReceivedImage(
                model=model,
                detail=image_url.get("detail"),
                bytes=len(data),
                width=size[0] if size else None,
                height=size[1] if size else None,
            )
        )
    return images


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The fake's token rule for input: whitespace-separated words of all text, plus IMAGE_TOKENS per image."""
    words = sum(len(text.split()) for text in _texts(messages))
    images = sum(1 for part in _parts(messages) if part.get("type") == "image_url")
    return words + IMAGE_TOKENS * images


def count_completion_tokens(text: str | None) -> int:
    """The fake's token rule for output: whitespace-separated words of the answer."""
    return len((text or "").split())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for a handler stuck in a Delay or on a dead client.
    block_on_close = False
    # socketserver's default backlog of 5 drops connections when dozens of calls arrive
    # at once, and the client's SYN retry then costs a second that is not the provider's.
    request_queue_size = 128

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from inside its own except block, so exc_info is set.
        log.debug("fake OpenAI server: error while handling a request", exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 closes each connection after its answer, so no keep-alive
    # connection can outlive stop() and reach a stopped fake.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake OpenAI server: " + format, *args)

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.path.rstrip("/") == STATS_PATH:
            self._send_json(200, fake.stats())
            return
        fake._record(RecordedRequest("GET", self.path, self._headers(), None))
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": fake.model, "object": "model", "created": 0, "owned_by": "fake"}
                    ],
                },
            )
        else:
            self._send_error_json(404, {}, None)

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") == RESET_PATH:
            fake.reset()
            self._send_json(200, fake.stats())
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest("POST", self.path, self._headers(), body)
        fake._record(request)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error_json(404, {}, None)
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_error_json(400, {}, None)
            return
        step = fake._next_step()
        fake._call_started()
        try:
            self._answer(step, request)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. it timed out during a Delay); nothing left to do.
            log.debug("fake OpenAI server: client went away before the answer")
            with fake._lock:
                fake._abandoned += 1
        finally:
            fake._call_ended()

    def _answer(self, step: Step | None, request: RecordedRequest) -> None:
        fake = self.server.fake
        if fake.latency > 0 and fake._stopping.wait(fake.latency):
            return
        if isinstance(step, Delay):
            if fake._stopping.wait(step.seconds):
                return
            step = step.then
        if step is None:
            step = Reply(default_answer(request.messages))
        if isinstance(step, Status):
            self._send_error_json(step.code, step.headers, step.body, request)
        elif isinstance(step, Raw):
            data = step.body.encode("utf-8") if isinstance(step.body, str) else step.body
            self._send(step.status, data, step.content_type, step.headers)
        elif request.get("stream"):
            self._send_stream(fake._completion_json(step, request), request, step.pace)
        else:
            self._send_json(200, fake._completion_json(step, request))

    def _send_stream(
        self, completion: dict[str, Any], request: RecordedRequest, pace: float = 0.0
    ) -> None:
        """Answer as the real API streams: one chunk per word, then usage if asked, then [DONE]."""
        choice = completion["choices"][0]
        text = choice["message"]["content"] or ""
        base = {k: completion[k] for k in ("id", "created", "model")} | {
            "object": "chat.completion.chunk"
        }
        pieces = re.findall(r"\S+\s*|\s+", text)
        chunks = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        events = [
            base | {"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in chunks
        ]
        events.append(
            base
            | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
        )
        if (request.get("stream_options") or {}).get("include_usage") and "usage" in completion:
            events.append(base | {"choices": [], "usage": completion["usage"]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in events:
            self.wfile.write(
                b"data: " + json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n\n"
            )
            self.wfile.flush()
            if pace and self.server.fake._stopping.wait(pace):
                return
        self.wfile.write(b"data: [DONE]\n\n")

    def _headers(self) -> dict[str, str]:
        return {key.lower(): value for key, value in self.headers.items()}

    def _send_error_json(
        self,
        code: int,
        headers: Mapping[str, str],
        body: Any,
        request: RecordedRequest | None = None,
    ) -> None:
        if body is None:
            kind, error_code, message = _STATUS_DEFAULTS.get(
                code, ("server_error", None, "The server had an error.")
            )
            if code == 401 and request is not None:
                # Like a careless provider, echo the key so tests can prove we never pass it on.
                key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                message = (
                    f"Incorrect API key provided: {key}. You can find your API key in your account."
                )
            body = {"error": {"message": message, "type": kind, "param": None, "code": error_code}}
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self._send(code, data, "application/json", headers)

    def _send_json(self, code: int, payload: Any) -> None:
        self._send(
            code, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json", {}
        )

    def _send(self, code: int, data: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class FakeOpenAI:
    """A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API for the SDK.

    Use as a context manager, or call start()/stop(). Point any OpenAI client
    (in this process or another) at `base_url`. Queue answers with
    `script(Reply(...), Status(429, {"retry-after": "7"}), Delay(2.0), ...)`;
    each chat request consumes one step, and with no step left the default
    responder answers (see `default_answer`). `requests` records every request.

    For benchmarks: `latency` seconds pass before every chat answer (after any
    scripted Delay's own), and `stats()` (also GET /fake/stats; POST /fake/reset
    resets) counts chat calls in flight and the images received.
    """

    def __init__(self, model: str = "fake-gpt", latency: float = 0.0) -> None:
        self.model = model
        self.latency = latency
        self._in_flight = 0
        self._max_in_flight = 0
        self._busy_seconds = 0.0
        self._busy_since = 0.0
        self._lock = threading.Lock()
        self._steps: deque[Step] = deque()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._abandoned = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOpenAI:
        """Start serving on a free loopback port; returns self. Raises RuntimeError if already started."""
        if self._server is not None:
            raise RuntimeError("the fake OpenAI server is already running")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; pending Delays end without answering. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake OpenAI server is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as base_url, e.g. "http://127.0.0.1:PORT/v1"."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Step) -> None:
        """Queue steps; each chat completion request consumes the next one."""
        with self._lock:
            self._steps.extend(steps)

    @property
    def abandoned(self) -> int:
        """Answers the client stopped reading before they were done (it went away)."""
        with self._lock:
            return self._abandoned

    @property
    def pending(self) -> int:
        """How many scripted steps have not been used yet."""
        with self._lock:
            return len(self._steps)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Chat completion requests received so far (a copy), oldest first."""
        with self._lock:
            return [r for r in self._requests if r.path.rstrip("/").endswith("/chat/completions")]

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """Every request received so far, any path (a copy), oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and unused steps; the in-flight peak restarts from now."""
        with self._lock:
            self._steps.clear()
            self._requests.clear()
            self._abandoned = 0
            self._max_in_flight = self._in_flight
            self._busy_seconds, self._busy_since = 0.0, time.monotonic()

    def stats(self) -> dict[str, Any]:
        """What the fake has served since the last reset, as GET /fake/stats answers it.

        `chat_calls`, `in_flight` (chat calls being answered now), `max_in_flight`
        (the most at once), `busy_seconds` (time with at least one chat call in
        flight), and `images`: one entry per image part received, with its request's
        model, its detail, its bytes and its pixel size (see ReceivedImage).
        """
        with self._lock:
            in_flight, peak, busy = self._in_flight, self._max_in_flight, self._busy_seconds
            if in_flight:
                busy += time.monotonic() - self._busy_since
        chats = self.requests
        return {
            "chat_calls": len(chats),
            "in_flight": in_flight,
            "max_in_flight": peak,
            "busy_seconds": busy,
            "images": [
                dataclasses.asdict(image) for chat in chats for image in received_images(chat)
            ],
        }

    def _call_started(self) -> None:
        with self._lock:
            if not self._in_flight:
                self._busy_since = time.monotonic()
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _call_ended(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if not self._in_flight:
                self._busy_seconds += time.monotonic() - self._busy_since

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_step(self) -> Step | None:
        with self._lock:
            return self._steps.popleft() if self._steps else None

    def _completion_json(self, reply: Reply, request: RecordedRequest) -> dict[str, Any]:
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else count_prompt_tokens(request.messages)
        )
        completion_tokens = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else count_completion_tokens(reply.text)
        )
        payload: dict[str, Any] = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request.get("model") or self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.text,
                        "refusal": reply.refusal,
                    },
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
        }
        if reply.usage:
            payload["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return payload


def main(argv: list[str] | None = None) -> int:
    """Serve the default responder until interrupted; writes the base URL as the first stdout line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="fake-gpt")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds before every chat answer"
    )
    args = parser.parse_args(argv)
    with FakeOpenAI(model=args.model, latency=args.latency) as fake:
        sys.stdout.write(fake.base_url + "\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
