"""HTTP routes: the page, the docs, POST /analyze/, the health probes and /metrics."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import msgspec
from litestar import MediaType, Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import File, Response, ServerSentEvent
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import CONTENT_TYPE_LATEST

from bus import blobs
from contracts.subjects import SERVICES, ServiceSpec, ping_subject
from gateway.config import MIB, Limits, Settings
from gateway.disconnect import until_disconnected
from gateway.errors import ERROR_RESPONSES
from gateway.jobs.admission import Submitter
from gateway.jobs.awaiting import AwaitedJob
from gateway.jobs.service import JobService
from gateway.limits import caller
from gateway.metrics import STATS_WINDOW, Metrics
from gateway.openapi import (
    AnalyzeOperation,
    DocsPageOperation,
    DocumentedOperation,
    error_responses,
)
from gateway.request_ids import current
from gateway.schemas import AnalyzeResponse, Health
from gateway.steering import STEERING_FIELDS, steer
from gateway.streaming import stream_analysis
from gateway.uploads import KEEP_FIELD, ReceivedForm, UploadError, receive_form

STATIC = Path(__file__).parent / "static"
_answers = msgspec.json.Decoder(AnalyzeResponse)


def _keep(form: ReceivedForm) -> bool:
    """The form's ``keep`` field: keep the analysis's job rather than remove it once
    answered. Raises UploadError for a value that is not a yes or a no."""
    value = form.fields.get(KEEP_FIELD, "").strip() or "false"
    if value not in ("true", "false"):  # a JSON boolean, as the document says
        raise UploadError(f"'{KEEP_FIELD}' is true or false")
    return value == "true"


# Before the stream starts: what the upload or the admission is refused with. Errors of
# the analysis itself come as an `error` event.
_STREAM_ERRORS = {
    **{status: ERROR_RESPONSES[status] for status in (400, 401, 408, 500)},
    429: "This client's rate limit (when the server sets one); see Retry-After",
    503: "The queue is full; see Retry-After",
}


def render_index(limits: Limits) -> str:
    """The page, with the browser-side checks set to this server's limits."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    values = {
        "max-image-mb": f"{limits.max_image_bytes / MIB:g}",
        "max-video-mb": f"{limits.max_video_bytes / MIB:g}",
        "max-images": str(limits.max_images),
        "max-prompt": str(limits.max_prompt_chars),
    }
    for name, value in values.items():
        page = re.sub(rf'data-{name}="[^"]*"', f'data-{name}="{value}"', page)
    return re.sub(r'maxlength="\d+"', f'maxlength="{limits.max_prompt_chars}"', page)


@get("/", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def index(state: State) -> str:
    page: str = state.index_html
    return page


@get(
    "/api/docs",
    media_type=MediaType.HTML,
    summary="API documentation page",
    operation_class=DocsPageOperation,
    sync_to_thread=False,
)
def api_docs() -> File:
    return File(STATIC / "docs.html", content_disposition_type="inline")


@post(
    ["/analyze/", "/analyze"],
    summary="Write a story in English and Thai from photos or a video",
    operation_class=AnalyzeOperation,
    status_code=200,
    responses=error_responses({s: ERROR_RESPONSES[s] for s in (400, 401, 408, 422, 429, 500, 503)}),
)
async def analyze(request: Request, state: State) -> Response[AnalyzeResponse]:
    """Stream the upload to disk under the limits, then run the pipeline over NATS."""
    settings = state.settings
    form = await _received(request, settings)
    jobs: JobService = state.jobs
    try:
        waiting = await jobs.start(form, _submitter(request, state), current(), keep=_keep(form))
    finally:
        form.discard()  # in the bucket or in the queue's message now
    answer = _answers.decode(await until_disconnected(request, waiting.result()))
    return Response(answer, headers=_kept(waiting))


@post(
    "/analyze/stream",
    summary="The same analysis, streamed as Server-Sent Events",
    description=(
        "Events: `stage` {stage, detail} as the work moves on (uploading, extracting_frames, "
        "transcribing, writing_story, translating); `story` {text} with each new piece of the "
        "English story; then `result` (the POST /analyze/ body) or `error` {status, detail}. "
        "Upload errors are answered before streaming, as JSON with status 400."
    ),
    operation_class=AnalyzeOperation,
    status_code=200,
    media_type="text/event-stream",
    responses=error_responses(_STREAM_ERRORS),
)
async def analyze_stream(request: Request, state: State) -> ServerSentEvent:
    settings = state.settings
    form = await _received(request, settings)
    try:
        keep = _keep(form)
    except UploadError:
        form.discard()
        raise
    jobs: JobService = state.jobs
    waiting, events = await stream_analysis(
        jobs, form, _submitter(request, state), request.url.path, keep
    )
    return ServerSentEvent(events, headers=_kept(waiting))


async def _received(request: Request, settings: Settings) -> ReceivedForm:
    """The upload form of /analyze/ and /analyze/stream, on disk under the limits."""
    form = await receive_form(
        request.headers.get("content-type"),
        request.stream(),
        settings.limits,
        settings.upload_dir,
        extra_fields=(KEEP_FIELD, *STEERING_FIELDS),
    )
    steer(form)
    return form


def _kept(waiting: AwaitedJob) -> dict[str, str]:
    """Where a kept job stays (none for one removed once answered)."""
    return {"Content-Location": f"/jobs/{waiting.job_id}"} if waiting.keep else {}


def _submitter(request: Request, state: State) -> Submitter:
    """Whose job an analysis is: the caller's key, or its address with keys off."""
    return Submitter.of(caller(request.scope), bool(state.settings.admission.api_keys))


@get(
    "/healthz",
    summary="The gateway process is up",
    operation_class=DocumentedOperation,
    sync_to_thread=False,
)
def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    summary="NATS is connected, the blob bucket answers and every service answers a ping",
    operation_class=DocumentedOperation,
    responses={503: ResponseSpec(data_container=Health, description="Not ready")},
)
async def readyz(state: State) -> Response[Health]:
    nc: Client = state.nc
    if not nc.is_connected:
        return Response(Health(status="not ready", nats=False, bucket=False), status_code=503)
    timeout = state.settings.ping_timeout
    bucket, *answers = await asyncio.gather(
        blobs.bucket_answers(state.store, timeout),
        *(_ping(nc, s, timeout) for s in SERVICES),
    )
    services = {s.name: ok for s, ok in zip(SERVICES, answers, strict=True)}
    ready = bucket and all(answers)
    return Response(
        Health(status="ready" if ready else "not ready", bucket=bucket, services=services),
        status_code=200 if ready else 503,
    )


@get(
    "/metrics",
    summary="Prometheus figures of the gateway and of every service replica",
    description=(
        "Prometheus text format: requests by route and status, requests in flight, upload "
        "bytes, rejections by reason, seconds per pipeline stage, tokens by stage, model and "
        "kind, and each service replica's NATS micro figures. Open even when API keys are "
        f"on; takes about {STATS_WINDOW:g} s while the service replicas answer."
    ),
    media_type=CONTENT_TYPE_LATEST,
    operation_class=DocumentedOperation,
)
async def metrics(state: State) -> Response[bytes]:
    figures: Metrics = state.metrics
    # Set as a header: Litestar would add a second charset to a text/ media type.
    page = await figures.scrape(state.nc, state.jobs.store)
    return Response(
        page, media_type=CONTENT_TYPE_LATEST, headers={"content-type": CONTENT_TYPE_LATEST}
    )


async def _ping(nc: Client, spec: ServiceSpec, timeout: float) -> bool:
    try:
        await nc.request(ping_subject(spec), b"", timeout=timeout)
    except (NoRespondersError, NatsTimeoutError, TimeoutError):
        return False
    return True


ROUTES = [index, api_docs, analyze, analyze_stream, healthz, readyz, metrics]
