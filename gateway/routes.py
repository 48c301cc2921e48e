"""HTTP routes: the page, the docs, POST /analyze/, the health probes and /metrics."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

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
from gateway.analysis import Analyzer
from gateway.config import MIB, Limits
from gateway.disconnect import until_disconnected
from gateway.metrics import STATS_WINDOW, Metrics
from gateway.openapi import AnalyzeOperation, DocsPageOperation, DocumentedOperation
from gateway.schemas import AnalyzeResponse, ErrorResponse, Health
from gateway.streaming import stream_analysis
from gateway.uploads import receive_form

STATIC = Path(__file__).parent / "static"

_ERRORS = {
    400: "Invalid file type, file size over the limits, or another client error",
    401: "Only when the server has API keys: the key is missing or not accepted",
    408: "The upload stalled or took too long to arrive",
    422: "The media is valid but holds nothing usable (e.g. no video stream)",
    429: "The model provider's rate limit was hit, or this client's rate limit; see Retry-After",
    500: "Something went wrong on the server side",
    503: "A service or the model provider is unavailable, or the server is busy",
}
# Before the stream starts: what the upload or the admission is refused with. Errors of
# the analysis itself come as an `error` event.
_STREAM_ERRORS = {
    400: _ERRORS[400],
    401: _ERRORS[401],
    408: _ERRORS[408],
    429: "This client's rate limit (when the server sets one); see Retry-After",
    500: _ERRORS[500],
    503: "The server is busy with as many analyses as it takes; see Retry-After",
}


def _error_responses(errors: dict[int, str]) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=ErrorResponse, description=text, generate_examples=False
        )
        for status, text in errors.items()
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
    responses=_error_responses(_ERRORS),
)
async def analyze(request: Request, state: State) -> AnalyzeResponse:
    """Stream the upload to disk under the limits, then run the pipeline over NATS."""
    settings = state.settings
    form = await receive_form(
        request.headers.get("content-type"), request.stream(), settings.limits, settings.upload_dir
    )
    analyzer: Analyzer = state.analyzer
    try:
        return await until_disconnected(request, analyzer.analyze(form))
    finally:
        form.discard()


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
    responses=_error_responses(_STREAM_ERRORS),
)
async def analyze_stream(request: Request, state: State) -> ServerSentEvent:
    settings = state.settings
    form = await receive_form(
        request.headers.get("content-type"), request.stream(), settings.limits, settings.upload_dir
    )
    return ServerSentEvent(stream_analysis(state.analyzer, form, request.url.path))


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
    page = await figures.scrape(state.nc)
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
