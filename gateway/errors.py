"""One table that turns every failure into an HTTP status with a {"detail": ...} body."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from litestar import Request, Response, status_codes
from litestar.exceptions import HTTPException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap
from nats.errors import Error as NatsError

from contracts.blobs import BlobsUnavailable
from contracts.logs import REQUEST_ID
from contracts.rpc import CallError, RemoteFailure
from gateway.disconnect import ClientGone
from gateway.request_ids import HEADER, from_header
from gateway.schemas import ErrorResponse
from gateway.uploads import UploadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """What a client is told about a failure."""

    status: int
    detail: str
    headers: dict[str, str] | None = None


def problem_of(exc: BaseException) -> Problem:
    """The status, detail and headers for ``exc``; never exposes internals of an unknown error."""
    match exc:
        case UploadError():
            return Problem(HTTP_400_BAD_REQUEST, str(exc))
        case ClientGone():
            # Nobody reads this answer; it only has to be quiet in the logs.
            return Problem(HTTP_400_BAD_REQUEST, str(exc))
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
            return Problem(HTTP_400_BAD_REQUEST, "the upload is larger than the limits allow")
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


def _handle(request: Request, exc: Exception) -> Response[ErrorResponse]:
    # Set by the middleware; errors raised before it runs (no such route) get theirs here.
    request_id = REQUEST_ID.get() or from_header(request.headers.get(HEADER))
    problem = problem_of(exc)
    log_problem(request.method, request.url.path, exc, problem)
    return error_response(problem, request_id)


EXCEPTION_HANDLERS: ExceptionHandlersMap = dict.fromkeys(
    (UploadError, RemoteFailure, CallError, BlobsUnavailable, NatsError, HTTPException, Exception),
    _handle,
)
