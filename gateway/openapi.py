"""The OpenAPI document's hand-written parts, so it says exactly what the server does.

The upload form and its limits, the headers every answer carries, the error answers
and, when API keys are on, how to send one. Litestar derives the rest from the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Encoding,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from gateway.config import Limits, Settings
from gateway.schemas import ErrorResponse
from gateway.steering import CAST_FIELD, CAST_SCHEMA, LENGTH_FIELD, LENGTH_SCHEMA
from gateway.uploads import FILES_FIELD, KEEP_FIELD, PROMPT_FIELD, SUPPORTED, megabytes

UPLOAD_BODY = "Upload"
JOB_BODY = "JobUpload"
AGAIN_BODY = "Again"
WEBHOOK_FIELD = "webhook_url"
# What the file parts are; the server goes by their first bytes, not by this header.
FILE_TYPES = "image/jpeg, image/png, video/mp4"
SEED_PROMPT = "Generate a story about this image in the style of Anthony Bourdain"

# An HTTP date (RFC 9110's IMF-fixdate), as Last-Modified is sent; not an RFC 3339 date-time.
HTTP_DATE = (
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$"
)

REQUEST_ID = "X-Request-ID"
RETRY_AFTER = "Retry-After"
WWW_AUTHENTICATE = "WWW-Authenticate"
# Headers and parameters every app's document defines once, for the operations to refer to.
_HEADERS: dict[str, OpenAPIHeader | Reference] = {
    # The ids gateway.request_ids echoes: a client's sound one, else a new hex uuid.
    REQUEST_ID: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z0-9_-]{1,64}$"),
        required=True,
        description="The request's id: the client's X-Request-ID when it is 1 to 64 letters, "
        "digits, '-' or '_', else a new one. Every log line and error body of the request has it.",
    ),
    RETRY_AFTER: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
        description="Seconds to wait before trying again.",
    ),
    WWW_AUTHENTICATE: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING),
        required=True,
        description="Bearer: how to send a key.",
    ),
}
_PARAMETERS: dict[str, Parameter | Reference] = {
    REQUEST_ID: Parameter(
        name=REQUEST_ID,
        param_in=ParamType.HEADER,
        schema=Schema(type=OpenAPIType.STRING),
        required=False,
        description="An id for this request, echoed when it is 1 to 64 letters, digits, '-' or "
        "'_'; any other value is replaced by a new id, never refused.",
    )
}
# Headers some error answers carry beside X-Request-ID.
_ERROR_HEADERS = {"401": [WWW_AUTHENTICATE], "429": [RETRY_AFTER], "503": [RETRY_AFTER]}

BEARER = "bearer"
API_KEY = "apiKey"
_SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    BEARER: SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer <key>"),
    API_KEY: SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="X-API-Key: <key>"
    ),
}
# Either header will do.
_KEY_NEEDED: list[SecurityRequirement] = [{BEARER: []}, {API_KEY: []}]


def _header(name: str) -> Reference:
    return Reference(ref=f"#/components/headers/{name}")


@dataclass
class DocumentedOperation(Operation):
    """Any operation: the X-Request-ID a client may send and every answer carries.

    Open to all, even when API keys are on, unless GUARDED.
    """

    GUARDED: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.parameters = [
            *(self.parameters or []),
            Reference(ref=f"#/components/parameters/{REQUEST_ID}"),
        ]
        for status, response in (self.responses or {}).items():
            if isinstance(response, OpenAPIResponse):
                names = [*_ERROR_HEADERS.get(status, []), REQUEST_ID]
                response.headers = {**(response.headers or {}), **{n: _header(n) for n in names}}
        # None takes the document's default (a key when the server has keys); an empty
        # list says no key is needed, whatever that default is.
        self.security = None if self.GUARDED else []


@dataclass
class DocsPageOperation(DocumentedOperation):
    """GET /api/docs: an HTML file, with the headers a file answer has."""

    def __post_init__(self) -> None:
        self.responses = {
            "200": OpenAPIResponse(
                description="The API documentation, as HTML",
                content={"text/html": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
                headers={
                    "Content-Length": OpenAPIHeader(
                        schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
                        description="The page's size in bytes",
                    ),
                    "Last-Modified": OpenAPIHeader(
                        schema=Schema(type=OpenAPIType.STRING, pattern=HTTP_DATE),
                        description="When the page last changed, as an HTTP date "
                        "(e.g. Sun, 06 Nov 1994 08:49:37 GMT)",
                    ),
                    "ETag": OpenAPIHeader(
                        schema=Schema(type=OpenAPIType.STRING), description="The page's entity tag"
                    ),
                },
            )
        }
        super().__post_init__()


@dataclass
class AnalyzeOperation(DocumentedOperation):
    """The upload routes: the multipart body they stream themselves; a key when keys are on."""

    GUARDED = True

    def __post_init__(self) -> None:
        self.request_body = Reference(ref=f"#/components/requestBodies/{UPLOAD_BODY}")
        super().__post_init__()


@dataclass
class JobOperation(DocumentedOperation):
    """A job's routes: a key when keys are on (the job is the key's)."""

    GUARDED = True


@dataclass
class AgainOperation(JobOperation):
    """POST /jobs/{id}/again: what to change, as JSON."""

    def __post_init__(self) -> None:
        self.request_body = Reference(ref=f"#/components/requestBodies/{AGAIN_BODY}")
        super().__post_init__()


def again_body(limits: Limits) -> RequestBody:
    """What another take of a job may change: each field absent keeps the original's."""
    return RequestBody(
        required=False,
        description="Optional JSON: any of `prompt`, `length` and `cast`, each as the upload "
        "form takes it; a field left out keeps the original job's, an empty prompt or cast "
        "clears it. No body keeps everything (another take of the same story).",
        content={
            "application/json": OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={
                        PROMPT_FIELD: Schema(
                            type=OpenAPIType.STRING,
                            max_length=limits.max_prompt_chars,
                            description="The style prompt; empty for the default one.",
                        ),
                        LENGTH_FIELD: LENGTH_SCHEMA,
                        CAST_FIELD: CAST_SCHEMA,
                    },
                    examples=[{LENGTH_FIELD: "long", CAST_FIELD: "Pumpkin: the orange cat"}],
                )
            )
        },
    )


@dataclass
class SubmitJobOperation(JobOperation):
    """POST /jobs: the upload form with a webhook_url."""

    def __post_init__(self) -> None:
        self.request_body = Reference(ref=f"#/components/requestBodies/{JOB_BODY}")
        super().__post_init__()


def error_responses(errors: dict[int, str]) -> dict[int, ResponseSpec]:
    """The error answers of a route: each a {"detail": ...} body."""
    return {
        status: ResponseSpec(
            data_container=ErrorResponse, description=text, generate_examples=False
        )
        for status, text in errors.items()
    }


def upload_body(limits: Limits, job: bool = False, webhook: bool = False) -> RequestBody:
    """The form POST /analyze/ and /analyze/stream take, with this server's limits; with
    ``job``, POST /jobs's (with ``webhook``, a webhook_url too)."""
    extra: dict[str, Schema | Reference] = {}
    if not job:
        extra[KEEP_FIELD] = Schema(
            type=OpenAPIType.BOOLEAN,
            description="Optional: true keeps the job this analysis runs as (its address is "
            "in the answer's Content-Location) instead of removing it once answered; a kept "
            "job runs on if the client leaves.",
        )
    if webhook:
        extra[WEBHOOK_FIELD] = Schema(
            type=OpenAPIType.STRING,
            format=OpenAPIFormat.URI,
            max_length=2048,
            description="Optional: an https (or http) address told when the job ends, by a "
            "POST of the job signed per the Standard Webhooks spec. Offered when the server "
            "has a webhook secret; private and loopback addresses are refused.",
        )
    largest_file = max(limits.max_image_bytes, limits.max_video_bytes)
    return RequestBody(
        required=True,
        description=f"{SUPPORTED}, within this server's limits: "
        f"{megabytes(limits.max_image_bytes)} per image, "
        f"{megabytes(limits.max_video_bytes)} for a video. Send only the fields below: "
        "others are ignored while they are small, and refused (400) beyond.",
        content={
            "multipart/form-data": OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    required=[FILES_FIELD],
                    properties={
                        FILES_FIELD: Schema(
                            type=OpenAPIType.ARRAY,
                            min_items=1,
                            max_items=limits.max_images,
                            items=Schema(
                                type=OpenAPIType.STRING,
                                format=OpenAPIFormat.BINARY,
                                min_length=1,
                                max_length=largest_file,
                            ),
                            description=f"JPG/PNG images (1 to {limits.max_images}, at most "
                            f"{megabytes(limits.max_image_bytes)} each) or one MP4 video (at "
                            f"most {megabytes(limits.max_video_bytes)}), not both. The type is "
                            "read from the file's first bytes; no file may be empty.",
                        ),
                        PROMPT_FIELD: Schema(
                            type=OpenAPIType.STRING,
                            max_length=limits.max_prompt_chars,
                            description="Optional style prompt, e.g. 'in the style of "
                            "Anthony Bourdain'. A default prompt is used when absent or blank.",
                            examples=[SEED_PROMPT],
                        ),
                        LENGTH_FIELD: LENGTH_SCHEMA,
                        CAST_FIELD: CAST_SCHEMA,
                        **extra,
                    },
                ),
                encoding={FILES_FIELD: Encoding(content_type=FILE_TYPES)},
            )
        },
    )


def describe_limits(limits: Limits) -> str:
    """The configured upload limits in words, for the OpenAPI description."""
    return (
        f"Limits on this server: {megabytes(limits.max_image_bytes)} per image and up to "
        f"{limits.max_images} images per request, or one video of up to "
        f"{megabytes(limits.max_video_bytes)}; a prompt of at most "
        f"{limits.max_prompt_chars} characters. Larger uploads are refused with 400."
    )


def openapi_config(settings: Settings) -> OpenAPIConfig:
    """The document at /schema/openapi.json (the UI at /schema), for this server's settings."""
    keys = bool(settings.admission.api_keys)
    return OpenAPIConfig(
        title="ImgStory API",
        version="1.0.0",
        description="Photos or a video in; a short story in English and Thai out. "
        + describe_limits(settings.limits),
        path="/schema",
        render_plugins=[SwaggerRenderPlugin()],
        components=Components(
            headers=_HEADERS,
            parameters=_PARAMETERS,
            request_bodies={
                UPLOAD_BODY: upload_body(settings.limits),
                JOB_BODY: upload_body(settings.limits, job=True, webhook=settings.webhooks.enabled),
                AGAIN_BODY: again_body(settings.limits),
            },
            security_schemes=_SECURITY_SCHEMES if keys else None,
        ),
        security=_KEY_NEEDED if keys else None,
    )
