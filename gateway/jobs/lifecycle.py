"""A gateway's part in durable jobs, started and stopped with it: the store, the workers
that run jobs here, and the sweep of expired jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bus import blobs
from bus.blobs import BlobStore
from bus.job_keys import JobKeys
from bus.jobs import JobsConfig, JobStore
from gateway.analysis import Analyzer
from gateway.config import Settings
from gateway.jobs.deliveries import Senders, open_deliveries
from gateway.jobs.loops import stopped
from gateway.jobs.runner import AnalysisRunner
from gateway.jobs.service import JobService
from gateway.jobs.worker import Workers, WorkerSettings

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

# How long a stopping gateway lets the jobs it runs finish before handing them back.
STOP_GRACE = 30.0


@contextlib.asynccontextmanager
async def running_jobs(
    nc: Client, media: BlobStore, analyzer: Analyzer, settings: Settings
) -> AsyncIterator[JobService]:
    """The job service, with this gateway's workers running and its sweep going."""
    jobs = settings.jobs
    sweep_every = min(jobs.ttl / 10, 300.0)
    config = JobsConfig(
        ttl=jobs.ttl,
        replicas=settings.bucket.replicas,
        ack_wait=jobs.lease,
        grace=2 * sweep_every,  # two sweeps see every job expired before JetStream drops it
    )
    js = blobs.jetstream(nc)
    store = await JobStore.open(js, config)
    await open_deliveries(js, config)
    keys = await JobKeys.open(js, config)
    service = JobService(
        nc,
        store,
        keys,
        media,
        jobs,
        on_ended=analyzer.metrics.job_ended,
        scratch=settings.upload_dir,
    )
    # A webhook's body: the job as GET /jobs/{id} shows it.
    senders = Senders(
        store, settings.webhooks, render=lambda record: _json.encode(service.view(record))
    )
    name = f"gateway-{socket.gethostname()}-{os.getpid()}"
    workers = Workers(
        nc,
        store,
        AnalysisRunner(analyzer, keep_frames=jobs.keep_media > 0),
        WorkerSettings(
            workers=jobs.workers,
            max_attempts=jobs.max_attempts,
            name=name,
            on_ended=analyzer.metrics.job_ended,
        ),
        release=service.release,
    )
    await workers.start()
    await senders.start()
    stop_sweeping = asyncio.Event()
    sweeper = asyncio.create_task(_sweep_forever(service, every=sweep_every, stop=stop_sweeping))
    try:
        yield service
    finally:
        await stopped(sweeper, stop_sweeping)
        await workers.close(grace=STOP_GRACE)
        await senders.close()
        await service.close()


async def _sweep_forever(service: JobService, every: float, stop: asyncio.Event) -> None:
    """Remove expired jobs with what they own. Every gateway sweeps; removing twice is
    harmless, and the streams' own expiry removes what no gateway was there to."""
    while not stop.is_set():
        with contextlib.suppress(NatsError, blobs.BlobsUnavailable):
            await service.sweep()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
