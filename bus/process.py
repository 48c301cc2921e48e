"""How every ImgStory process starts: logging, settings, signals, connection and drain.

Each ``python -m <service>`` is one call to ``run_service``; the gateway uses the same
logging and settings handling around uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

from nats.aio.client import Client

from bus import tracing
from bus.connection import connect
from bus.logs import configure_logging, log_format
from bus.server import Server
from bus.settings import Env, SettingsError

log = logging.getLogger(__name__)


class ServiceSettings(Protocol):
    @property
    def nats_url(self) -> str: ...


S = TypeVar("S")
ServiceS = TypeVar("ServiceS", bound=ServiceSettings)


def load_settings(load: Callable[[], S]) -> S:
    """``load()``, or exit with status 2 and one clear line when a setting is bad."""
    try:
        return load()
    except SettingsError as err:
        log.critical("refusing to start: %s", err)
        sys.exit(2)


def start_logging(service: str) -> None:
    """Log as ``IMGSTORY_LOG_FORMAT`` says, each line naming ``service``.

    Exits with status 2 when the format is unknown (said in text: nothing else is known).
    """
    configure_logging(service=service)
    json_lines = load_settings(lambda: log_format(Env(os.environ))) == "json"
    configure_logging(json_lines=json_lines, service=service)


@contextlib.contextmanager
def traced_as(service: str) -> Iterator[None]:
    """Within the block, send traces as ``service`` when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    On leaving it, the spans still batched are sent. Exits with status 2 for a bad endpoint.
    """
    provider = load_settings(lambda: tracing.setup(service, Env(os.environ)))
    try:
        yield
    finally:
        if provider is not None:
            provider.shutdown()


async def run_until_signalled(
    nats_url: str, client_name: str, start: Callable[[Client], Awaitable[Server]]
) -> None:
    """Connect, start a service, wait for SIGINT/SIGTERM, then stop it and drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nc = await connect(nats_url, client_name)
    try:
        server = await start(nc)
        log.info("%s listening on %s", client_name, nats_url)
        await stop.wait()
        log.info("%s stopping", client_name)
        await server.stop()
    finally:
        await nc.drain()


def run_service(
    client_name: str,
    load: Callable[[], ServiceS],
    start: Callable[[Client, ServiceS], Awaitable[Server]],
) -> None:
    """The whole of a service's ``__main__``: logging, settings, serve until signalled."""
    start_logging(client_name)
    settings = load_settings(load)
    with traced_as(client_name):
        asyncio.run(
            run_until_signalled(settings.nats_url, client_name, lambda nc: start(nc, settings))
        )
