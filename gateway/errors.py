"""One table that turns every failure into an HTTP status with a {"detail": ...} body."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import msgspec
from litestar import Request, Response, status_codes
from litestar.exceptions import HTTPException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_408_REQUEST_TIMEOUT,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap, Scope, Send
from nats.errors import Error as NatsError

from bus.blobs import BlobsUnavailable
from bus.jobs import JobNotFound
from bus.logs import REQUEST_ID
from bus.rpc import CallError, RemoteFailure
from gateway.disconnect import ClientGone
from gateway.jobs.admission import QueueFull
from gateway.jobs.media import MediaGone
from gateway.jobs.service import JobFinished, KeyInUse, KeyReused
from gateway.jobs.webhooks import WebhookRefused
from gateway.jobs.worker import JobFailed
from gateway.request_ids import HEADER, from_header
from gateway.schemas import ErrorResponse
from gateway.uploads import SlowUpload, UploadError

log = logging.getLogger(__name__)

# What each error status means, for the OpenAPI description of every route.
ERROR_RESPONSES = {
    400: "Invalid file type, file size over the limits, or another client error",
    401: "Only when the server has API keys: the key is missing or not accepted",
    404: "No such job (never made, deleted, expired, or another key's)",
    408: "The upload stalled or took too long to arrive",
    409: "The job has ended already",
    410: "The job's photos or video are no longer kept: upload them again",
    422: "The media is valid but holds nothing usable (e.g. no video stream); for POST "
    "/jobs also an Idempotency-Key sent before with another request",
    429: "The model provider's rate limit was hit, or this client's rate limit; see Retry-After",
    500: "Something went wrong on the server side",
    503: "A service or the model provider is unavailable, or the queue is full; see Retry-After",
}

# Where a request turned away notes why, in the ASGI scope's state, for the metrics.
REJECTION_KEY = "imgstory_rejection"


@dataclass(frozen=True)
class Problem:
    """What a client is told about a failure."""

    status: int
    detail: str
    headers: dict[str, str] | None = None
    rejection: str | None = None  # why the request was turned away, for the metrics


def problem_of(exc: BaseException) -> Problem:
    """The status, detail and headers for ``exc``; never exposes internals of an unknown error."""
    match exc:
        case UploadError():
            return Problem(HTTP_400_BAD_REQUEST, str(exc))
        case SlowUpload():
            # The rest of the body is never read: the connection cannot serve another request.
            return Problem(
                HTTP_408_REQUEST_TIMEOUT, str(exc), {"Connection": "close"}, "slow_upload"
            )
        case ClientGone():
            # Nobody reads this answer; it only has to be quiet in the logs.
            return Problem(HTTP_400_BAD_REQUEST, str(exc))
        case JobFailed(error=error):
            headers = None
            if error.retry_after is not None:
                headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
            return Problem(error.status, error.detail, headers)
        case WebhookRefused(detail=detail):
            return Problem(HTTP_400_BAD_REQUEST, detail)
        case JobNotFound():
            return Problem(status_codes.HTTP_404_NOT_FOUND, "no such job")
        case JobFinished() | KeyInUse():
            return Problem(status_codes.HTTP_409_CONFLICT, str(exc))
        case KeyReused():
            return Problem(status_codes.HTTP_422_UNPROCESSABLE_ENTITY, str(exc))
        case MediaGone():
            return Problem(
                status_codes.HTTP_410_GONE,
                "this job's photos or video are no longer kept for another take: upload them again",
            )
        case QueueFull(retry_after=wait):
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            return Problem(HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers, "queue_full")
        case RemoteFailure(failure=failure):
            headers = None
            if failure.retry_after is not None:
                headers = {"Retry-After": str(max(1, math.ceil(failure.retry_after)))}
            return Problem(failure.code.status, failure.detail, headers)
        case CallError():
            return Problem(HTTP_503_SERVICE_UNAVAILABLE, exc.detail)
        case BlobsUnavailable():
            return Problem(HTTP_503_SERVICE_UNAVAILABLE, "the blob store did not answer; try again")
        case NatsError():
            return Problem(HTTP_503_SERVICE_UNAVAILABLE, "the message bus (NATS) is unavailable")
        case HTTPException(status_code=status_codes.HTTP_413_REQUEST_ENTITY_TOO_LARGE):
            # The seed contract reports every size limit as 400.
            return Problem(
                HTTP_400_BAD_REQUEST,
                "the upload is larger than the limits allow",
                None,
                "too_large",
            )
        case HTTPException():
            return Problem(exc.status_code, exc.detail, exc.headers)
    return Problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


def log_problem(method: str, path: str, exc: BaseException, problem: Problem) -> None:
    if problem.status == HTTP_500_INTERNAL_SERVER_ERROR and not isinstance(exc, HTTPException):
        log.error("%s %s failed", method, path, exc_info=exc)
    elif problem.status >= 500:
        log.warning("%s %s: %s (%d)", method, path, problem.detail, problem.status)


def error_response(problem: Problem, request_id: str) -> Response[ErrorResponse]:
    return Response(
        ErrorResponse(detail=problem.detail, request_id=request_id),
        status_code=problem.status,
        headers={**(problem.headers or {}), "X-Request-ID": request_id},
    )


def note_rejection(scope: Scope, reason: str) -> None:
    """Say in the scope's state why this request is turned away (a metrics middleware reads it)."""
    scope.setdefault("state", {})[REJECTION_KEY] = reason


async def send_problem(send: Send, problem: Problem, request_id: str) -> None:
    """Answer with ``problem`` straight on the ASGI ``send``, for middleware that refuses
    a request before any handler (or exception handler) runs."""
    body = msgspec.json.encode(ErrorResponse(detail=problem.detail, request_id=request_id))
    headers = {
        **(problem.headers or {}),
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-request-id": request_id,
    }
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _handle(request: Request, exc: Exception) -> Response[ErrorResponse]:
    # Set by the middleware; errors raised before it runs (no such route) get theirs here.
    request_id = REQUEST_ID.get() or from_header(request.headers.get(HEADER))
    problem = problem_of(exc)
    log_problem(request.method, request.url.path, exc, problem)
    if problem.rejection is not None:
        note_rejection(request.scope, problem.rejection)
    return error_response(problem, request_id)


EXCEPTION_HANDLERS: ExceptionHandlersMap = dict.fromkeys(
    (
        UploadError,
        SlowUpload,
        RemoteFailure,
        CallError,
        BlobsUnavailable,
        NatsError,
        JobFailed,
        JobNotFound,
        WebhookRefused,
        JobFinished,
        KeyInUse,
        KeyReused,
        MediaGone,
        QueueFull,
        HTTPException,
        Exception,
    ),
    _handle,
)
