"""Prometheus figures for GET /metrics: the gateway's own, and every service replica's.

The gateway counts its requests in an ASGI middleware and the pipeline's stages and
tokens where they end; the services' figures are asked of NATS micro (``$SRV.STATS``)
when Prometheus scrapes. Every app has a registry of its own, so several apps in one
process (the tests) never share a figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.micro.service import ServiceVerb, control_subject
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from bus.discovery import ask_every_replica
from bus.endpoint import Figures
from bus.jobs import JobStore
from contracts.messages import Usage
from contracts.subjects import SERVICES
from gateway.errors import problem_of

log = logging.getLogger(__name__)

STAGES = ("frames", "story", "translation", "total")
# Where the API-key and limit middleware notes why it turned a request away.
REJECTION_KEY = "imgstory_rejection"
REJECTION_REASONS = (
    "unauthorized",
    "rate_limited",
    "saturated",
    "queue_full",
    "too_large",
    "slow_upload",
    "invalid_upload",
)
# A client that left before its answer started: nginx's "client closed request".
CLIENT_GONE_STATUS = 499
# How long a scrape listens for the replicas' $SRV.STATS answers.
STATS_WINDOW = 0.25

# From a cached frame (10 ms) to a local model's long story (minutes).
_STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 200, 300)
# From a bare form (1 kB) to the largest upload the limits allow (10 images of 10 MB).
_BYTE_BUCKETS = tuple(float(2**n) for n in range(10, 28, 2))


class Metrics:
    """The gateway's figures, in a registry of its own; ``scrape`` renders them all."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imgstory_requests",
            "HTTP requests answered, by route template and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "imgstory_requests_in_flight",
            "HTTP requests being served now (a scrape counts itself)",
            ["route"],
            registry=self.registry,
        )
        self.upload_bytes = Histogram(
            "imgstory_upload_bytes",
            "Request body bytes received per POST request",
            buckets=_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.rejections = Counter(
            "imgstory_rejections",
            "Requests turned away, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "imgstory_stage_seconds",
            "Seconds each pipeline stage took, as the gateway saw it; total is the whole analysis",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "imgstory_tokens",
            "Model tokens spent, by stage, model and kind (input or output)",
            ["stage", "model", "kind"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "imgstory_jobs",
            "Jobs that ended, by outcome (succeeded, failed, canceled), counted by the "
            "gateway that wrote the outcome",
            ["status"],
            registry=self.registry,
        )
        self.queue = Gauge(
            "imgstory_jobs_queued",
            "Jobs waiting in the shared queue for a worker, at the last scrape",
            registry=self.registry,
        )
        self.oldest_queued = Gauge(
            "imgstory_jobs_oldest_queued_seconds",
            "How long the oldest job still waiting for a worker has waited (0: none waits)",
            registry=self.registry,
        )
        self.services = ServiceFigures()
        self.registry.register(self.services)
        # Known label values start at zero, so rate() and alerts see them before the first event.
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        for status in ("succeeded", "failed", "canceled"):
            self.jobs.labels(status)

    def stage_ended(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def tokens_used(self, stage: str, model: str, usage: Usage) -> None:
        self.tokens.labels(stage, model, "input").inc(usage.input_tokens)
        self.tokens.labels(stage, model, "output").inc(usage.output_tokens)

    def job_ended(self, status: str) -> None:
        self.jobs.labels(status).inc()

    async def scrape(self, nc: Client, jobs: JobStore | None = None) -> bytes:
        """Every figure in Prometheus text format, the services' and the queue's asked
        for first.

        Takes about ``STATS_WINDOW`` seconds; a bus that does not answer only leaves the
        services' and the queue's figures as they were.
        """
        await self.services.refresh(nc)
        if jobs is not None and nc.is_connected:
            with contextlib.suppress(NatsError, TimeoutError):
                self.queue.set(await jobs.queued())
                oldest = await jobs.oldest_queued_at()
                self.oldest_queued.set(0 if oldest is None else max(0.0, time.time() - oldest))
        return generate_latest(self.registry)


@dataclass
class _Exchange:
    """What the middleware saw of one HTTP request."""

    received: int = 0
    status: int | None = None
    client_gone: bool = False  # the client left before the answer started
    error: BaseException | None = None


class MetricsMiddleware:
    """Counts every routed request by route template and final status, in flight, its
    body bytes, and why it was turned away (set by the limits, or a 400 upload)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        # The template, never the path: one series per route, whatever clients send.
        route = scope.get("path_template") or "unmatched"
        seen = _Exchange()

        async def counting_receive() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.request":
                seen.received += len(message.get("body", b""))
            elif message["type"] == "http.disconnect" and seen.status is None:
                seen.client_gone = True
            return message

        async def status_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]
            await send(message)

        in_flight = self.metrics.in_flight.labels(route)
        in_flight.inc()
        try:
            await self.app(scope, counting_receive, status_send)
        except BaseException as exc:
            # Answered by the app's exception handlers outside this middleware.
            seen.error = exc
            raise
        finally:
            in_flight.dec()
            self._ended(scope, route, seen)

    def _ended(self, scope: Scope, route: str, seen: _Exchange) -> None:
        status = _status(seen)
        self.metrics.requests.labels(route, str(status)).inc()
        post = scope.get("method") == "POST"
        if post:
            self.metrics.upload_bytes.observe(seen.received)
        reason = scope.get("state", {}).get(REJECTION_KEY)
        if reason is None and post and status == 400:
            reason = "invalid_upload"  # every 400 of an upload route is about its upload
        if reason is not None:
            self.metrics.rejections.labels(str(reason)).inc()


def _status(seen: _Exchange) -> int:
    if seen.status is not None:
        return seen.status
    if seen.client_gone or isinstance(seen.error, asyncio.CancelledError):
        return CLIENT_GONE_STATUS
    if seen.error is not None:
        # What the app's exception handlers answer for it (gateway.errors).
        return problem_of(seen.error).status
    return 500


class _EndpointStats(msgspec.Struct):
    """The part of a micro STATS endpoint entry read here."""

    name: str = ""
    num_requests: int = 0
    num_errors: int = 0
    processing_time: int = 0  # nanoseconds
    data: Figures | None = None  # what bus.server.Server counted itself

    @property
    def errors(self) -> int:
        return sum(self.data.failed.values()) if self.data else self.num_errors

    @property
    def seconds(self) -> float:
        return self.data.seconds if self.data else self.processing_time / 1e9


class _ServiceStats(msgspec.Struct):
    """The part of a micro STATS answer read here."""

    name: str = ""
    id: str = ""
    endpoints: list[_EndpointStats] = msgspec.field(default_factory=list)


_stats = msgspec.json.Decoder(_ServiceStats)


class ServiceFigures:
    """A Prometheus collector of every service replica's micro figures.

    Collectors are called synchronously, so the figures are asked for beforehand
    (``refresh``, on the event loop) and ``collect`` only reads the last answers.
    """

    def __init__(self, window: float = STATS_WINDOW) -> None:
        self.window = window
        self._heard: list[_ServiceStats] = []

    async def refresh(self, nc: Client) -> None:
        """Ask every replica of every service for its figures and listen ``window`` s.

        A bus that is down or refuses leaves no figures (never stale ones), not an error.
        """
        subjects = [control_subject(ServiceVerb.STATS, spec.name) for spec in SERVICES]
        try:
            answers = await ask_every_replica(nc, subjects, _stats, self.window)
        except NatsError as err:
            log.debug("could not ask the services for their figures: %s", err)
            answers = []
        names = {spec.name for spec in SERVICES}
        heard = [stats for stats in answers if stats.name in names]
        self._heard = heard

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families(self._heard)

    @staticmethod
    def _families(heard: list[_ServiceStats] | None = None) -> list[Metric]:
        labels = ["service", "endpoint", "replica"]
        requests = CounterMetricFamily(
            "imgstory_service_requests",
            "Requests a service replica's endpoint received (NATS micro $SRV.STATS)",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "imgstory_service_errors",
            "Calls a service replica's endpoint answered with a failure ($SRV.STATS)",
            labels=labels,
        )
        seconds = CounterMetricFamily(
            "imgstory_service_processing_seconds",
            "Seconds a service replica's endpoint spent on calls, queueing not counted ($SRV.STATS)",
            labels=labels,
        )
        replicas = GaugeMetricFamily(
            "imgstory_service_replicas",
            "Replicas of each service that answered this scrape's $SRV.STATS",
            labels=["service"],
        )
        if heard is not None:
            for spec in SERVICES:
                replicas.add_metric([spec.name], sum(s.name == spec.name for s in heard))
            for stats in heard:
                for endpoint in stats.endpoints:
                    values = [stats.name, endpoint.name, stats.id]
                    requests.add_metric(values, endpoint.num_requests)
                    errors.add_metric(values, endpoint.errors)
                    seconds.add_metric(values, endpoint.seconds)
        return [requests, errors, seconds, replicas]
