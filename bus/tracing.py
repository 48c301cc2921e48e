"""OpenTelemetry traces through every process, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

One trace per request: the gateway's HTTP span is its root; each stage call is a span
of the gateway's, each NATS send of it a client span whose W3C ``traceparent`` travels
in the message headers, so the serving replica's span is that send's child; each model
call is a client span inside the service's. With no endpoint set no SDK provider is
installed and every helper here returns at once: nothing is measured, nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from bus.settings import Env, SettingsError

log = logging.getLogger(__name__)

T = TypeVar("T")

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
# The OTLP rule: a traces-only endpoint is used as given, the general one gets /v1/traces.
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
TRACES_PATH = "/v1/traces"

# The attribute every ImgStory span of a request carries: the id its log lines carry.
REQUEST_ID = "imgstory.request_id"

Attributes = Mapping[str, AttributeValue]

# Where this process's spans go; None (the default) is tracing off. One slot for the
# process, as OpenTelemetry's own global is, but one that can be emptied again (tests).
_tracer: trace.Tracer | None = None


def endpoint(env: Env) -> str | None:
    """The OTLP/HTTP URL spans are sent to, or None when tracing is off.

    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as given, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    with ``/v1/traces`` added. Raises SettingsError for a value that is not an http(s) URL.
    """
    for name in (TRACES_ENDPOINT, ENDPOINT):
        url = env.optional(name)
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"{name} must be an http:// or https:// URL, not {url!r}")
        return url if name == TRACES_ENDPOINT else url.rstrip("/") + TRACES_PATH
    return None


def build_provider(service: str, env: Env) -> TracerProvider | None:
    """A provider that batches spans to the OTLP endpoint as ``service``; None when off.

    Raises SettingsError for a bad endpoint. The exporter reads the other
    ``OTEL_EXPORTER_OTLP_*`` settings (headers, timeout, certificate) itself, and the
    provider ``OTEL_TRACES_SAMPLER``.
    """
    url = endpoint(env)
    if url is None:
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


def setup(service: str, env: Env) -> TracerProvider | None:
    """Trace this process as ``service`` when the environment names an endpoint.

    Returns the provider (shut it down at exit: that sends the spans still batched),
    or None when tracing is off and nothing was installed. Raises SettingsError.
    """
    provider = build_provider(service, env)
    if provider is not None:
        # The API's global too, for any library that traces through it.
        trace.set_tracer_provider(provider)
        activate(provider)
        log.info("%s sends its traces to %s", service, endpoint(env))
    return provider


def activate(provider: trace.TracerProvider | None) -> None:
    """Send this module's spans to ``provider`` from now on; None turns tracing off."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("imgstory")


def active() -> bool:
    """Whether spans are being recorded in this process."""
    return _tracer is not None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes | None = None,
    parent: otel_context.Context | None = None,
    status_on_error: bool = True,
) -> Iterator[Span]:
    """A span around the block, current inside it; a non-recording one when tracing is off.

    ``parent`` None is the current span; an empty ``Context()`` starts a new trace. An
    exception leaving the block is recorded with its type as ``error.type`` and, unless
    ``status_on_error`` is False (an HTTP server span judges by status code), sets the
    status to ERROR; cancellation marks the span ``imgstory.cancelled`` and ERROR (a
    send given up on, a request dropped).
    """
    if _tracer is None:
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        set_status_on_exception=status_on_error,
    ) as current:
        try:
            yield current
        except asyncio.CancelledError:
            current.set_attribute("imgstory.cancelled", True)
            current.set_status(Status(StatusCode.ERROR, "cancelled"))
            raise
        except Exception as err:
            current.set_attribute("error.type", type(err).__qualname__)
            raise


def failed(code: str, detail: str) -> None:
    """Mark the current span failed with a contract ``Failure``'s code and detail."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attribute("error.type", str(code))
        current.set_status(Status(StatusCode.ERROR, detail))


def with_context(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` with the current span's trace context added (``traceparent``).

    Unchanged when tracing is off, so a message then carries nothing more.
    """
    if _tracer is None:
        return headers
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier or None


@contextlib.contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Within the block, spans are children of the span whose context ``carrier`` holds
    (work done later, elsewhere, for a request: a job's run under its submission)."""
    if _tracer is None or not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        otel_context.detach(token)


def _messaging(subject: str, operation: str, request_id: str) -> dict[str, AttributeValue]:
    """The attributes of a NATS send or of serving one (OpenTelemetry messaging names)."""
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        REQUEST_ID: request_id,
    }


def sending(subject: str, request_id: str) -> contextlib.AbstractContextManager[Span]:
    """A client span around one NATS request to ``subject`` and the wait for its reply."""
    return span(
        f"send {subject}", kind=SpanKind.CLIENT, attributes=_messaging(subject, "send", request_id)
    )


async def served(
    work: Awaitable[T], headers: Mapping[str, str] | None, subject: str, request_id: str
) -> T:
    """Await ``work`` in a server span, the child of the span whose context ``headers`` carry."""
    if _tracer is None:
        return await work
    parent = propagate.extract(dict(headers or {}))
    attributes = _messaging(subject, "process", request_id)
    with span(f"process {subject}", kind=SpanKind.SERVER, attributes=attributes, parent=parent):
        return await work
