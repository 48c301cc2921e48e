"""A service's news about one request: stages, text as written, finished paragraphs."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError

from contracts.messages import Message, Paragraph, Progress, Stage

_encoder = msgspec.msgpack.Encoder()


class Reporter:
    """Publishes Progress for one request; does nothing when the caller is not listening."""

    def __init__(self, nc: Client, subject: str | None, request_id: str) -> None:
        self.nc = nc
        self.subject = subject
        self.request_id = request_id
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[None]] = set()  # publishes under way (kept referenced)

    async def stage(self, stage: Stage, detail: str = "") -> None:
        await self._publish(Progress(request_id=self.request_id, stage=stage, detail=detail))

    def text_from_thread(self, stage: Stage, piece: str) -> None:
        """Publish a piece of generated text; safe to call from a worker thread."""
        if piece:
            self._from_thread(Progress(request_id=self.request_id, stage=stage, text=piece))

    def paragraph_from_thread(self, index: int, text: str) -> None:
        """Publish a finished paragraph; safe to call from a worker thread."""
        self._from_thread(Paragraph(request_id=self.request_id, index=index, text=text))

    def _from_thread(self, news: Message) -> None:
        if self.subject is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            # A streaming HTTP client calls back on the loop: a task is enough, without
            # waking the loop through its self-pipe for every piece of text.
            task = self._loop.create_task(self._publish(news))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        else:
            asyncio.run_coroutine_threadsafe(self._publish(news), self._loop)

    async def _publish(self, news: Message) -> None:
        if self.subject is not None:
            with contextlib.suppress(NatsError):  # news lost to a reconnect is only news
                await self.nc.publish(self.subject, _encoder.encode(news))
