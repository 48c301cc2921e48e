"""HTTP routes: the page, the docs, POST /analyze/ and the health probes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from litestar import MediaType, Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.response import File, Response
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from contracts.subjects import SERVICES, ServiceSpec, ping_subject
from gateway.schemas import AnalyzeResponse, ErrorResponse, Health
from gateway.uploads import FILES_FIELD, PROMPT_FIELD, SUPPORTED, receive_form

STATIC = Path(__file__).parent / "static"

_ERRORS = {
    400: "Invalid file type, file size over the limits, or another client error",
    422: "The media is valid but holds nothing usable (e.g. no video stream)",
    429: "The model provider's rate limit was hit; see Retry-After",
    500: "Something went wrong on the server side",
    503: "A service or the model provider is unavailable",
}


@dataclass
class AnalyzeOperation(Operation):
    """Documents the multipart body the handler streams itself."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=f"{SUPPORTED}. 10 MB per image, 50 MB per video.",
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=[FILES_FIELD],
                        properties={
                            FILES_FIELD: Schema(
                                type=OpenAPIType.ARRAY,
                                items=Schema(type=OpenAPIType.STRING, format="binary"),
                                description="JPG/PNG images (several allowed) or one MP4 video",
                            ),
                            PROMPT_FIELD: Schema(
                                type=OpenAPIType.STRING,
                                description="Optional style prompt, e.g. 'in the style of "
                                "Anthony Bourdain'. A default prompt is used when absent.",
                            ),
                        },
                    )
                )
            },
        )


@get("/", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def index() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline")


@get("/api/docs", media_type=MediaType.HTML, summary="API documentation page", sync_to_thread=False)
def api_docs() -> File:
    return File(STATIC / "docs.html", content_disposition_type="inline")


@post(
    ["/analyze/", "/analyze"],
    summary="Write a story in English and Thai from photos or a video",
    operation_class=AnalyzeOperation,
    status_code=200,
    responses={
        status: ResponseSpec(data_container=ErrorResponse, description=text, generate_examples=False)
        for status, text in _ERRORS.items()
    },
)
async def analyze(request: Request, state: State) -> AnalyzeResponse:
    """Stream the upload to disk under the limits, then run the pipeline over NATS."""
    settings = state.settings
    form = await receive_form(
        request.headers.get("content-type"), request.stream(), settings.limits, settings.upload_dir
    )
    try:
        return await state.analyzer.analyze(form)
    finally:
        form.discard()


@get("/healthz", summary="The gateway process is up", sync_to_thread=False)
def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    summary="NATS is connected and every service answers a ping",
    responses={503: ResponseSpec(data_container=Health, description="Not ready")},
)
async def readyz(state: State) -> Response[Health]:
    nc = state.nc
    if not nc.is_connected:
        return Response(Health(status="not ready", nats=False), status_code=503)
    answers = await asyncio.gather(*(_ping(nc, s, state.settings.ping_timeout) for s in SERVICES))
    services = {s.name: ok for s, ok in zip(SERVICES, answers)}
    ready = all(answers)
    return Response(
        Health(status="ready" if ready else "not ready", services=services),
        status_code=200 if ready else 503,
    )


async def _ping(nc: Client, spec: ServiceSpec, timeout: float) -> bool:
    try:
        await nc.request(ping_subject(spec), b"", timeout=timeout)
    except (NoRespondersError, NatsTimeoutError, asyncio.TimeoutError):
        return False
    return True


ROUTES = [index, api_docs, analyze, healthz, readyz]
