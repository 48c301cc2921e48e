"""HTTP routes of durable jobs: submit, read, list, follow, cancel, delete."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import HttpMethod, Request, delete, get, post, route
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, Parameter
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage

from bus.jobs import JobNotFound, JobStore
from contracts.messages import JobStatus
from gateway.errors import ERROR_RESPONSES
from gateway.jobs.admission import Submitter
from gateway.jobs.media import Steering
from gateway.jobs.service import JobService
from gateway.jobs.views import JobPage, JobView
from gateway.jobs.webhooks import check_target
from gateway.limits import caller
from gateway.openapi import (
    WEBHOOK_FIELD,
    AgainOperation,
    JobOperation,
    SubmitJobOperation,
    error_responses,
)
from gateway.request_ids import current
from gateway.steering import (
    CAST_FIELD,
    LENGTH_FIELD,
    STEERING_FIELDS,
    read_cast,
    read_length,
    steer,
)
from gateway.uploads import ReceivedForm, UploadError, receive_form

# Any text: an id that names no job (or not the caller's) is 404, as an unknown one is.
JobId = Annotated[str, Parameter(description="The job's id, as POST /jobs answered it")]
_FINISHED = {status.value for status in JobStatus if status.finished}
_status = msgspec.json.Decoder(dict[str, object])
PAGE_SIZE = 20
MAX_KEY_LENGTH = 255  # the IETF httpapi Idempotency-Key draft's bound


def _owner(request: Request, state: State) -> str | None:
    """A job belongs to the key that made it; with keys off, to whoever has its id."""
    return caller(request.scope) if state.settings.admission.api_keys else None


def _fingerprint(form: ReceivedForm, webhook_url: str | None) -> str:
    """A digest of what a submission asks for: its files' bytes, prompt, steering and webhook."""
    digest = hashlib.sha256()
    cast = "\n".join(f"{member.name}:{member.who}" for member in form.cast)
    for part in (form.prompt or "", webhook_url or "", form.length or "", cast):
        digest.update(part.encode() + b"\0")
    for received in form.files:
        digest.update(f"{received.size}\0".encode())
        with received.path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return error_responses({status: ERROR_RESPONSES[status] for status in statuses})


@post(
    "/jobs",
    summary="Start a story as a durable job; come back for it later",
    description=(
        "The same multipart fields and limits as POST /analyze/, plus an optional "
        "`webhook_url`. Answers 202 with the job and its address in `Location`; an upload "
        "error is a 400 before any job exists. The job runs on whichever gateway has a "
        "free worker, survives the loss of the one that took it, and is kept until "
        "`expires_at`."
    ),
    status_code=202,
    operation_class=SubmitJobOperation,
    responses=_errors(400, 401, 408, 422, 429, 503),
)
async def submit_job(
    request: Request,
    state: State,
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            max_length=MAX_KEY_LENGTH,
            description="Optional, at most 255 characters: the same key with the same request "
            "within the job's lifetime answers the same job and does no second work; with "
            "another request it is 422. A blank key is no key.",
        ),
    ] = None,
) -> Response[JobView]:
    settings = state.settings
    idempotency_key = (idempotency_key or "").strip() or None
    form = await receive_form(
        request.headers.get("content-type"),
        request.stream(),
        settings.limits,
        settings.upload_dir,
        extra_fields=(WEBHOOK_FIELD, *STEERING_FIELDS),
    )
    steer(form)
    jobs: JobService = state.jobs
    try:
        webhook_url = form.fields.get(WEBHOOK_FIELD, "").strip() or None
        if webhook_url is not None:
            webhook_url = await check_target(webhook_url, settings.webhooks)
        submitter = Submitter.of(caller(request.scope), bool(settings.admission.api_keys))
        if idempotency_key is None:
            job = await jobs.submit(form, submitter, request_id=current(), webhook_url=webhook_url)
        else:
            fingerprint = await asyncio.to_thread(_fingerprint, form, webhook_url)
            job, _ = await jobs.submit_once(
                form,
                submitter,
                idempotency_key,
                fingerprint,
                request_id=current(),
                webhook_url=webhook_url,
            )
    finally:
        form.discard()
    view = jobs.view(job.record)
    return Response(view, status_code=202, headers={"Location": view.urls.self_})


class AgainBody(msgspec.Struct, forbid_unknown_fields=False):
    """What another take changes (gateway.openapi.again_body documents it)."""

    prompt: str | msgspec.UnsetType = msgspec.UNSET
    length: str | msgspec.UnsetType = msgspec.UNSET
    cast: str | msgspec.UnsetType = msgspec.UNSET


MAX_AGAIN_BODY = 16 * 1024


@post(
    "/jobs/{job_id:str}/again",
    summary="Another take of a job: a new job on the same photos or video, no upload",
    description=(
        "While the job's media are kept (until `media_kept_until`, an hour after it ended by "
        "default), starts a new job on copies of them, with any of `prompt`, `length` and "
        "`cast` changed; the frames the first job read are reused, so the new job goes "
        "straight to the story. Answers 202 with the new job (its `again_of` names this "
        "one), as POST /jobs does; 410 once the media are gone."
    ),
    status_code=202,
    operation_class=AgainOperation,
    responses=_errors(400, 401, 404, 410, 503),
)
async def again_job(request: Request, state: State, job_id: JobId) -> Response[JobView]:
    settings = state.settings
    steering = _steering(await _small_body(request), settings.limits.max_prompt_chars)
    jobs: JobService = state.jobs
    submitter = Submitter.of(caller(request.scope), bool(settings.admission.api_keys))
    job = await jobs.again(job_id, submitter, steering, request_id=current())
    view = jobs.view(job.record)
    return Response(view, status_code=202, headers={"Location": view.urls.self_})


async def _small_body(request: Request) -> bytes:
    """The request's body, refused (400) past MAX_AGAIN_BODY bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_AGAIN_BODY:
            raise UploadError("the body is too large: send a small JSON object")
    return bytes(body)


def _steering(body: bytes, max_prompt_chars: int) -> Steering:
    """What the JSON ``body`` (maybe empty) asks to change. Raises UploadError."""
    try:
        asked = msgspec.json.decode(body or b"{}", type=AgainBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise UploadError(
            f"send a JSON object with any of 'prompt', 'length' and 'cast' ({err})"
        ) from None
    fields = {
        name: value
        for name, value in ((LENGTH_FIELD, asked.length), (CAST_FIELD, asked.cast))
        if isinstance(value, str)
    }
    prompt = asked.prompt if isinstance(asked.prompt, str) else None
    if prompt is not None and len(prompt) > max_prompt_chars:
        raise UploadError(f"prompt is too long: at most {max_prompt_chars} characters")
    return Steering(
        prompt=None if prompt is None else prompt.strip(),
        length=read_length(fields),
        cast=read_cast(fields) if CAST_FIELD in fields else None,
    )


@get(
    "/jobs/{job_id:str}",
    operation_class=JobOperation,
    summary="A job: its status, stage, and its result or error once it ended",
    responses=_errors(401, 404),
)
async def get_job(request: Request, state: State, job_id: JobId) -> JobView:
    jobs: JobService = state.jobs
    return jobs.view((await jobs.get(job_id, _owner(request, state))).record)


@get(
    "/jobs",
    operation_class=JobOperation,
    summary="The caller's jobs, newest first (offered when API keys are on)",
    responses=_errors(400, 401),
)
async def list_jobs(
    request: Request,
    state: State,
    cursor: Annotated[
        str | None, Parameter(description="next_cursor of the page before", max_length=64)
    ] = None,
    limit: Annotated[int, Parameter(ge=1, le=100)] = PAGE_SIZE,
) -> JobPage:
    jobs: JobService = state.jobs
    owner = caller(request.scope)
    records = await jobs.owned(owner) if owner is not None else []
    if cursor is not None:
        ids = [record.id for record in records]
        records = records[ids.index(cursor) + 1 :] if cursor in ids else []
    page = records[:limit]
    more = len(records) > limit
    return JobPage(
        jobs=[jobs.view(record) for record in page], next_cursor=page[-1].id if more else None
    )


@get(
    "/jobs/{job_id:str}/events",
    operation_class=JobOperation,
    summary="A job's events as Server-Sent Events, from the start or after Last-Event-ID",
    description=(
        "The events /analyze/stream sends (`stage`, `story`, `thai`, `result`, `error`) and "
        "`status` {status, attempts} at each change of status, each with an `id:`. A client "
        "that reconnects with `Last-Event-ID` gets only what came after it. The stream "
        "ends after the job's last `status`; a finished job's events replay from the start "
        "until it expires. When a job is run again after its gateway was lost, a `status` "
        "`running` with the next attempt number starts its story again."
    ),
    media_type="text/event-stream",
    responses=_errors(401, 404),
)
async def job_events(
    request: Request,
    state: State,
    job_id: JobId,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
) -> ServerSentEvent:
    jobs: JobService = state.jobs
    owner = _owner(request, state)
    await jobs.get(job_id, owner)  # 404 before the stream starts
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return ServerSentEvent(_replay(jobs, job_id, owner, after))


async def _replay(
    jobs: JobService, job_id: str, owner: str | None, after: int
) -> AsyncIterator[ServerSentEventMessage]:
    store: JobStore = jobs.store
    async for heard in store.events(job_id, after):
        if heard is None:
            # Quiet for a while: a job deleted meanwhile has no more events to come; a
            # client is told the stream is alive (a comment, which no client shows).
            try:
                await jobs.get(job_id, owner)
            except JobNotFound:
                return
            yield ServerSentEventMessage(comment="waiting")
            continue
        number, event = heard
        yield ServerSentEventMessage(id=str(number), event=event.name, data=event.data.decode())
        if event.name == "status" and _status.decode(event.data).get("status") in _FINISHED:
            return


@post(
    "/jobs/{job_id:str}/cancel",
    operation_class=JobOperation,
    summary="Cancel a job: its model calls stop, its media are removed (idempotent)",
    status_code=200,
    responses=_errors(401, 404, 409),
)
async def cancel_job(request: Request, state: State, job_id: JobId) -> JobView:
    jobs: JobService = state.jobs
    return jobs.view((await jobs.cancel(job_id, _owner(request, state))).record)


@delete(
    "/jobs/{job_id:str}",
    operation_class=JobOperation,
    summary="Delete a job now: its record, events, media and result",
    status_code=204,
    responses=_errors(401, 404),
)
async def delete_job(request: Request, state: State, job_id: JobId) -> None:
    jobs: JobService = state.jobs
    await jobs.delete(job_id, _owner(request, state))


def _allow(path: str, methods: list[str]) -> HTTPRouteHandler:
    """OPTIONS for a path several handlers serve: Litestar's own names only the first's
    method in Allow (litestar 2.25: its handler keeps the route it was made for)."""

    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})

    return route(
        path,
        http_method=[HttpMethod.OPTIONS],
        name=f"options {path}",
        include_in_schema=False,
        sync_to_thread=False,
    )(options)


def job_routes(keys_on: bool) -> list[HTTPRouteHandler]:
    """Every job route; listing the caller's jobs only when API keys say who that is."""
    # Each OPTIONS first: a path's first handler decides whether Litestar makes its own.
    routes = [_allow("/jobs/{job_id:str}", ["DELETE", "GET", "OPTIONS"])]
    if keys_on:
        routes += [_allow("/jobs", ["GET", "OPTIONS", "POST"]), list_jobs]
    return [*routes, submit_job, get_job, delete_job, job_events, cancel_job, again_job]
