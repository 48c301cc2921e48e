"""POST /analyze/stream: the analysis's job as Server-Sent Events (stages, text, result)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from litestar.response import ServerSentEventMessage

from contracts.messages import JobEvent
from gateway.errors import log_problem, problem_of
from gateway.jobs.admission import Submitter
from gateway.jobs.awaiting import AwaitedJob
from gateway.jobs.service import JobService
from gateway.request_ids import current
from gateway.uploads import ReceivedForm

_json = msgspec.json.Encoder()
# The events of a job that this stream passes on as they come; its end is its own.
_PASSED_ON = frozenset({"stage", "story", "thai"})


def _event(kind: str, payload: object) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=kind, data=_json.encode(payload).decode())


async def stream_analysis(
    jobs: JobService, form: ReceivedForm, submitter: Submitter, path: str, keep: bool = False
) -> tuple[AwaitedJob, AsyncIterator[ServerSentEventMessage]]:
    """Submit the form as a job for this caller, then yield its progress and ``result``
    or ``error``. Submission errors (a full queue) are raised before the first event.

    However the stream ends, the job is removed, and cancelled first when it still runs
    (the client went away): nobody else waits for it. A kept job runs on and stays.
    """
    news: asyncio.Queue[JobEvent | None] = asyncio.Queue()
    try:
        waiting = await jobs.start(form, submitter, current(), on_event=news.put_nowait, keep=keep)
    finally:
        form.discard()  # in the bucket or in the queue's message now
    return waiting, _relay(waiting, news, path)


async def _relay(
    waiting: AwaitedJob, news: asyncio.Queue[JobEvent | None], path: str
) -> AsyncIterator[ServerSentEventMessage]:
    task = asyncio.ensure_future(waiting.result())
    task.add_done_callback(lambda _: news.put_nowait(None))
    try:
        while (event := await news.get()) is not None:
            if event.name in _PASSED_ON:
                yield ServerSentEventMessage(event=event.name, data=event.data.decode())
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            yield ServerSentEventMessage(event="result", data=task.result().decode())
        else:
            problem = problem_of(failure)
            log_problem("POST", path, failure, problem)
            yield _event(
                "error",
                {"status": problem.status, "detail": problem.detail, "request_id": current()},
            )
    finally:
        if not task.done():
            task.cancel()  # the client left: the job is cancelled and removed
            await asyncio.gather(task, return_exceptions=True)
