"""The Litestar application: create_app() wires settings, NATS and the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.static_files import create_static_files_router

from bus import blobs, connection
from gateway import config
from gateway.analysis import Analyzer
from gateway.auth import announce_keys
from gateway.capabilities import Capabilities
from gateway.cleanup import Janitor, sweep_orphans, sweep_upload_files
from gateway.errors import EXCEPTION_HANDLERS
from gateway.hardening import add_security_headers, cors_config
from gateway.jobs.lifecycle import running_jobs
from gateway.jobs.routes import job_routes, submit_job
from gateway.limits import admission_middleware
from gateway.metrics import Metrics, MetricsMiddleware
from gateway.openapi import openapi_config
from gateway.request_ids import RequestIdMiddleware
from gateway.routes import ROUTES, STATIC, analyze, analyze_stream, render_index
from gateway.traces import TraceMiddleware

log = logging.getLogger(__name__)

_FORM_OVERHEAD = 1024 * 1024  # multipart boundaries, headers and the prompt


def create_app(settings: config.Settings | None = None) -> Litestar:
    """Build the app; NATS is connected in the lifespan, never at import."""
    settings = settings or config.load()
    metrics = Metrics()  # this app's own registry: apps in one process never mix figures

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await connection.connect(settings.nats_url, "imgstory-gateway")
        janitor = None
        capabilities = Capabilities(nc)
        try:
            store = await blobs.open_bucket(blobs.jetstream(nc), settings.bucket)
            # Nothing alive is older than the longest a request may take.
            await sweep_orphans(store, older_than=settings.longest_request)
            sweep_upload_files(settings.upload_dir, older_than=settings.longest_request)
            janitor = Janitor(nc, store)
            janitor.start()
            # Known before the first request, when the story replicas are up already.
            await capabilities.refresh()
            capabilities.start()
            app.state.nc = nc
            app.state.store = store
            analyzer = Analyzer(nc, store, janitor, settings, capabilities, metrics)
            app.state.analyzer = analyzer
            async with running_jobs(nc, store, analyzer, settings) as jobs:
                app.state.jobs = jobs
                yield
        finally:
            await capabilities.close()
            if janitor is not None:
                await janitor.close()
            await nc.drain()

    limits = settings.limits
    page = announce_keys(render_index(limits), settings.admission.api_keys)
    largest_body = max(limits.max_images * limits.max_image_bytes, limits.max_video_bytes)
    keys_on = bool(settings.admission.api_keys)
    jobs = job_routes(keys_on)
    return Litestar(
        route_handlers=[*ROUTES, *jobs, create_static_files_router("/static", [STATIC])],
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "index_html": page,
                "metrics": metrics,
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        cors_config=cors_config(settings.cors_origins),
        before_send=[add_security_headers],
        # Metrics first: it sees the final status of every answer, rejections included.
        middleware=[
            DefineMiddleware(MetricsMiddleware, metrics=metrics),
            RequestIdMiddleware,
            # Inside the request id, which its span carries; around the refusals too.
            TraceMiddleware,
            # Inside the request id: a refusal carries the id its log line has.
            admission_middleware(
                settings.admission,
                guarded=[analyze, analyze_stream, submit_job],
                # A job's reads need the key it belongs to; OPTIONS needs none.
                identified=[
                    route
                    for route in jobs
                    if route is not submit_job and "OPTIONS" not in route.http_methods
                ],
            ),
        ],
        # Every process logs the same way (bus.logs), with the request id.
        logging_config=None,
        # Early 400 from Content-Length; per-file limits are enforced while streaming.
        request_max_body_size=largest_body + _FORM_OVERHEAD,
        openapi_config=openapi_config(settings),
    )
