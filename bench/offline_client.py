"""The offline benchmark's client: one POST /analyze/stream, timed as its events arrive."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

UPLOAD_CHUNK = 64 * 1024


@dataclass
class Answer:
    """One POST /analyze/stream, timed by the client as its events arrive."""

    media: str
    elapsed: float = math.nan  # seconds from the request's start to the stream's end
    # Seconds from the end of the upload to the first `story` event, to the last one,
    # to the `translating` stage (the first translation call started) and to the first
    # `thai` event.
    first_words: float = math.nan
    last_words: float = math.nan
    translating: float = math.nan
    first_thai: float = math.nan
    english: str = ""
    thai: str = ""
    warnings: list[str] = field(default_factory=list)
    input_tokens: int = 0  # the result's token_usage: every model call it took, retries too
    output_tokens: int = 0
    error: str | None = None

    @property
    def total(self) -> float:
        """Seconds from the request's start to its result; NaN if it failed."""
        return math.nan if self.error else self.elapsed


class TimedUpload:
    """A request body sent in chunks, noting when its last byte went to the socket."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent_at = math.nan  # time.perf_counter()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), UPLOAD_CHUNK):
            yield self.body[start : start + UPLOAD_CHUNK]
        # httpx asks for the next chunk only once it has written the last one.
        self.sent_at = time.perf_counter()


def multipart(path: Path) -> tuple[bytes, str]:
    """The multipart form of a one-file upload of `path`, and its Content-Type."""
    form = httpx.Request(
        "POST",
        "http://bench/",
        files=[("files", (path.name, path.read_bytes(), "application/octet-stream"))],
    )
    return form.read(), form.headers["Content-Type"]


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """The (event, data) pairs of a Server-Sent Events response, as each arrives."""
    kind, data = "", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line:
            if kind:
                yield kind, json.loads("\n".join(data) or "null")
            kind, data = "", []


async def analyze(client: httpx.AsyncClient, path: Path) -> Answer:
    """POST `path` to /analyze/stream and time its events."""
    body, content_type = multipart(path)
    upload = TimedUpload(body)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    answer = Answer(path.name)
    started = time.perf_counter()
    answer.error = "the stream ended without a result"  # until its `result` event
    async with client.stream("POST", "/analyze/stream", content=upload, headers=headers) as reply:
        if reply.status_code == 200:
            async for kind, data in sse_events(reply):
                note(answer, kind, data, time.perf_counter() - upload.sent_at)
        else:
            await reply.aread()
            answer.error = f"HTTP {reply.status_code}: {reply.text[:200]}"
    answer.elapsed = time.perf_counter() - started
    return answer


def note(answer: Answer, kind: str, data: Any, since_upload: float) -> None:
    """Record one event of `answer`'s stream, which came `since_upload` seconds after the
    end of the upload."""
    if kind == "story":
        if math.isnan(answer.first_words):
            answer.first_words = since_upload
        answer.last_words = since_upload
    elif kind == "stage" and data["stage"] == "translating":
        answer.translating = since_upload
    elif kind == "thai" and math.isnan(answer.first_thai):
        answer.first_thai = since_upload
    elif kind == "result":
        answer.english, answer.thai = data["english"], data["thai"]
        answer.warnings = data["warnings"]
        answer.input_tokens = data["token_usage"]["input_tokens"]
        answer.output_tokens = data["token_usage"]["output_tokens"]
        answer.error = None
    elif kind == "error":
        answer.error = f"{data['status']}: {data['detail']}"


async def at_once(client: httpx.AsyncClient, photos: Sequence[Path]) -> tuple[list[Answer], float]:
    """All `photos` sent at once, one request each; the answers and the wall seconds."""
    started = time.perf_counter()
    answers = await asyncio.gather(*(analyze(client, photo) for photo in photos))
    return list(answers), time.perf_counter() - started
