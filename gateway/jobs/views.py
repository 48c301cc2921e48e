"""A job as the API shows it (JSON), made from its record."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from contracts.messages import JobRecord
from gateway.schemas import AnalyzeResponse

_results = msgspec.json.Decoder(AnalyzeResponse)


class JobFailure(msgspec.Struct, kw_only=True):
    """What the synchronous call would have answered: its status and detail."""

    status: int
    detail: str


class JobLinks(msgspec.Struct, kw_only=True):
    self_: str = msgspec.field(name="self")
    events: str
    cancel: str
    again: str | None = None  # POST here for another take, while the media are kept


class WebhookView(msgspec.Struct, kw_only=True):
    """How the delivery of the job's webhook goes."""

    url: str
    status: str  # pending, delivered or failed
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class JobMedia(msgspec.Struct, kw_only=True):
    """What was uploaded: its kind (image or video) and how many files, and until when
    they are kept for another take (null: while it runs, or no longer kept)."""

    kind: str
    files: int
    kept: bool = False  # POST urls.again takes another take of them
    kept_until: datetime | None = None


class JobRequest(msgspec.Struct, kw_only=True):
    """How the story was asked for: the prompt, the length and the cast as read."""

    prompt: str | None = None
    length: str | None = None
    cast: list[str] = msgspec.field(default_factory=list)  # "Name: who or what" lines


class JobView(msgspec.Struct, kw_only=True):
    id: str
    status: str  # queued, running, succeeded, failed or canceled
    stage: str | None  # the stage names /analyze/stream uses, while running
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime  # after it the job, its events and its media are gone
    attempts: int  # deliveries to a worker: above 1 when a gateway was lost mid-job
    result: AnalyzeResponse | None  # the POST /analyze/ answer, once succeeded
    error: JobFailure | None  # once failed
    urls: JobLinks
    media: JobMedia
    webhook: WebhookView | None = None
    request: JobRequest | None = None
    again_of: str | None = None  # the job this is another take of


class JobPage(msgspec.Struct, kw_only=True):
    """The caller's jobs, newest first; ``next_cursor`` asks for the page after."""

    jobs: list[JobView]
    next_cursor: str | None = None


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def job_view(record: JobRecord, kept: bool = False, kept_until: float | None = None) -> JobView:
    """The job as the API shows it; ``kept``: its media are kept for another take (until
    ``kept_until``, once it ended)."""
    base = f"/jobs/{record.id}"
    webhook = None
    if record.webhook_url is not None:
        state = record.webhook
        webhook = WebhookView(
            url=record.webhook_url,
            status=state.status.value if state else "pending",
            attempts=state.attempts if state else 0,
            last_status=state.last_status if state else None,
            last_error=state.last_error if state else None,
            delivered_at=_time(state.delivered_at) if state else None,
        )
    error = record.error
    return JobView(
        id=record.id,
        status=record.status.value,
        stage=record.stage.value if record.stage is not None else None,
        created_at=datetime.fromtimestamp(record.created_at, UTC),
        started_at=_time(record.started_at),
        finished_at=_time(record.finished_at),
        expires_at=datetime.fromtimestamp(record.expires_at, UTC),
        attempts=record.attempts,
        result=_results.decode(record.result) if record.result is not None else None,
        error=JobFailure(status=error.status, detail=error.detail) if error else None,
        urls=JobLinks(
            self_=base,
            events=f"{base}/events",
            cancel=f"{base}/cancel",
            again=f"{base}/again" if kept else None,
        ),
        media=JobMedia(
            kind=record.kind.value,
            files=len(record.uploads),
            kept=kept,
            kept_until=_time(kept_until) if kept else None,
        ),
        webhook=webhook,
        request=JobRequest(
            prompt=record.prompt,
            length=record.length.value if record.length else None,
            cast=[f"{member.name}: {member.who}" for member in record.cast],
        ),
        again_of=record.again_of,
    )
