"""What a job's work is: one analysis, its progress kept as the job's events."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.errors import Error as NatsError

from bus import tracing
from bus.blobs import BlobsUnavailable
from bus.logs import REQUEST_ID
from bus.rpc import BusUnavailable, CallError, RemoteFailure
from contracts.messages import Cancel, JobEvent, JobRecord, JobUpload, Progress, Stage
from contracts.subjects import cancel_subject
from gateway.analysis import Analyzer, Media
from gateway.errors import problem_of
from gateway.jobs.worker import JobFailed, JobInterrupted, JobRun

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()
_encoder = msgspec.msgpack.Encoder()
# Pieces of text are gathered this long into one event: a story is hundreds of pieces,
# and each event is a stored message.
TEXT_EVERY_SECONDS = 0.1


class EventRelay:
    """Turns an analysis's progress into the job's events, in order.

    A stage becomes a ``stage`` event (and the job's recorded stage); a translated
    paragraph a ``thai`` event; pieces of the story become ``story`` events, gathered
    for up to TEXT_EVERY_SECONDS so the stream is not one stored message per token.
    """

    def __init__(self, job: JobRun) -> None:
        self.job = job
        self._pieces: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def progress(self, progress: Progress) -> None:
        if progress.text is not None and progress.stage is Stage.TRANSLATING:
            self.flush()
            self.job.event(JobEvent(name="thai", data=_json.encode({"text": progress.text})))
            return
        if progress.text is not None:
            self._pieces.append(progress.text)
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(TEXT_EVERY_SECONDS, self.flush)
            return
        self.flush()
        body = {"stage": progress.stage.value, "detail": progress.detail}
        self.job.event(JobEvent(name="stage", data=_json.encode(body)))
        self.job.stage_soon(progress.stage)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pieces:
            text = "".join(self._pieces)
            self.job.event(JobEvent(name="story", data=_json.encode({"text": text})))
        self._pieces = []


def attempt_key(record: JobRecord, attempt: int) -> str:
    """The pipeline key of one attempt of a job: what its service calls are known by, so
    a later attempt can name an earlier one's calls. It starts with the submission's
    request id, as every request's key does (found by the id in the services' logs)."""
    return f"{record.request_id or record.id}-{record.id}-{attempt}"


class AnalysisRunner:
    """Runs a job as the synchronous call would, and answers with its JSON.

    With ``keep_frames``, a kept job keeps the frames its frame stage made (recorded on
    the job, removed with its media) for another take, which reads them instead.
    """

    def __init__(self, analyzer: Analyzer, keep_frames: bool = False) -> None:
        self.analyzer = analyzer
        self.keep_frames = keep_frames

    async def __call__(self, record: JobRecord, uploads: list[JobUpload], job: JobRun) -> bytes:
        """Raises JobFailed with what the synchronous call would have answered
        (JobInterrupted when the bus or the bucket failed it)."""
        relay = EventRelay(job)
        # Progress is told only to someone who can read it: a kept job's events are
        # stored for later readers; an unkept one's reach its caller, who shows them
        # only when it streams (/analyze/stream). Else no story piece is even sent.
        listener = relay.progress if record.keep or record.watched else None
        request_id = record.request_id or record.id
        token = REQUEST_ID.set(request_id)  # the job's log lines name its submission
        await self._abandon_earlier(record)
        media = Media(
            kind=record.kind,
            uploads=uploads,
            prompt=record.prompt,
            length=record.length,
            cast=record.cast,
            request_id=request_id,
            pipeline_key=attempt_key(record, record.attempts),
            frames=record.frames or None,
            video=record.video if record.frames else None,
            on_frames=job.frames_soon if self.keep_frames and record.keep else None,
        )
        try:
            with tracing.continued(record.trace):
                answer = await self.analyzer.analyze(media, on_progress=listener)
        except (RemoteFailure, CallError, BlobsUnavailable, NatsError) as err:
            problem = problem_of(err)
            log.info("job %s failed (%d): %s", record.id, problem.status, problem.detail)
            retry_after = None
            if problem.headers and "Retry-After" in problem.headers:
                retry_after = float(problem.headers["Retry-After"])
            # The bus or the bucket failing is the system's fault, not the job's: the job
            # is handed back to the queue for another attempt rather than failed.
            interrupted = isinstance(err, BusUnavailable | BlobsUnavailable | NatsError)
            failed = JobInterrupted if interrupted else JobFailed
            raise failed(problem.status, problem.detail, retry_after) from err
        finally:
            relay.flush()
            REQUEST_ID.reset(token)
        return _json.encode(answer)

    async def _abandon_earlier(self, record: JobRecord) -> None:
        """Tell every replica to drop the calls of the job's earlier attempts.

        A gateway that died mid-job told no one: its story call would run on at the
        provider, billed, holding a model slot, with no one to read it.
        """
        for attempt in range(1, record.attempts):
            key = attempt_key(record, attempt)
            cancel = Cancel(request_id=key, reason="a later attempt of the job runs")
            with contextlib.suppress(NatsError):  # queued for the reconnect if the bus is down
                await self.analyzer.nc.publish(cancel_subject(key), _encoder.encode(cancel))
