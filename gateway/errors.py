"""One table that turns every failure into an HTTP status with a {"detail": ...} body."""

from __future__ import annotations

import logging
import math

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from nats.errors import Error as NatsError

from contracts.rpc import CallError, RemoteFailure
from gateway.schemas import ErrorResponse
from gateway.uploads import UploadError

log = logging.getLogger(__name__)


def error_response(
    status: int, detail: str, headers: dict[str, str] | None = None
) -> Response[ErrorResponse]:
    return Response(ErrorResponse(detail=detail), status_code=status, headers=headers)


def _remote_failure(request: Request, exc: RemoteFailure) -> Response:
    failure = exc.failure
    headers = None
    if failure.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(failure.retry_after)))}
    if failure.code.status >= 500:
        log.warning("%s %s: %s (%s)", request.method, request.url.path, failure.detail, failure.code)
    return error_response(failure.code.status, failure.detail, headers)


def _call_error(request: Request, exc: CallError) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, exc.detail)
    return error_response(HTTP_503_SERVICE_UNAVAILABLE, exc.detail)


def _nats_error(request: Request, exc: NatsError) -> Response:
    log.warning("%s %s: message bus error %r", request.method, request.url.path, exc)
    return error_response(HTTP_503_SERVICE_UNAVAILABLE, "the message bus (NATS) is unavailable")


def _upload_error(request: Request, exc: UploadError) -> Response:
    return error_response(HTTP_400_BAD_REQUEST, str(exc))


def _http_exception(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        # The seed contract reports every size limit as 400.
        return error_response(HTTP_400_BAD_REQUEST, "the upload is larger than the limits allow")
    if exc.status_code >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return error_response(exc.status_code, exc.detail, exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


EXCEPTION_HANDLERS = {
    RemoteFailure: _remote_failure,
    CallError: _call_error,
    NatsError: _nats_error,
    UploadError: _upload_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
