"""POST /analyze/stream: the analysis as Server-Sent Events (stages, story text, result)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from litestar.response import ServerSentEventMessage

from contracts.messages import Progress, Stage
from gateway.analysis import Analyzer
from gateway.errors import log_problem, problem_of
from gateway.request_ids import current
from gateway.uploads import ReceivedForm

_json = msgspec.json.Encoder()


def _event(kind: str, payload: object) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=kind, data=_json.encode(payload).decode())


def _progress_event(progress: Progress) -> ServerSentEventMessage:
    if progress.text is not None:
        kind = "thai" if progress.stage is Stage.TRANSLATING else "story"
        return _event(kind, {"text": progress.text})
    return _event("stage", {"stage": progress.stage.value, "detail": progress.detail})


async def stream_analysis(
    analyzer: Analyzer, form: ReceivedForm, path: str
) -> AsyncIterator[ServerSentEventMessage]:
    """Run the analysis and yield its progress, then ``result`` or ``error``.

    The form's files are discarded and the analysis cancelled (its blobs deleted) however
    the stream ends, including when the client goes away.
    """
    news: asyncio.Queue[Progress | None] = asyncio.Queue()
    task = asyncio.create_task(analyzer.analyze(form, on_progress=news.put_nowait))
    task.add_done_callback(lambda _: news.put_nowait(None))
    try:
        while (progress := await news.get()) is not None:
            yield _progress_event(progress)
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            yield _event("result", task.result())
        else:
            problem = problem_of(failure)
            log_problem("POST", path, failure, problem)
            yield _event(
                "error",
                {"status": problem.status, "detail": problem.detail, "request_id": current()},
            )
    finally:
        # The files go first and without an await: when the client leaves, the server
        # cancels this generator again at every await in here.
        form.discard()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
