"""The three services as real processes (`python -m`), for tests whose fault needs them apart
from the test's own process: a gateway killed, NATS restarted under them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.errors import Error as NatsError

from contracts.subjects import SERVICES, ping_subject
from devstack.fake_openai import FakeOpenAI
from devstack.processes import ProcessGroup, service_env

SERVICE_MODULES = ("frame_service", "story_service", "translation_service")


@asynccontextmanager
async def running_services(
    nats_url: str, fake: FakeOpenAI, logs: Path, *, timeout: float = 60, **extra: str
) -> AsyncIterator[ProcessGroup]:
    """Frames, story and translation as processes talking to ``fake``, each answering a
    ping once the block starts; stopped by SIGTERM after it.

    ``extra`` are further environment variables for each; each one's output goes to
    ``logs/<module>.log``. Raises ProcessExited if one exits at start-up, TimeoutError
    if one does not answer within ``timeout`` seconds.
    """
    env = service_env(nats_url, fake, **extra)
    async with ProcessGroup(grace=15) as group:
        for module in SERVICE_MODULES:
            group.python(module, module, env=env, log=logs / f"{module}.log")
        await every_service_answers(nats_url, group, timeout)
        yield group


async def every_service_answers(nats_url: str, group: ProcessGroup, timeout: float) -> None:
    """Return once a replica of each service answers its ping.

    Raises ProcessExited if a process of ``group`` exits meanwhile, TimeoutError after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    client = await nats.connect(nats_url)
    try:
        for service in SERVICES:
            while True:
                group.check()
                try:
                    await client.request(ping_subject(service), b"", timeout=0.5)
                    break
                except (NatsError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{service.name} did not answer within {timeout:g} s"
                        ) from None
                    await asyncio.sleep(0.2)
    finally:
        await client.close()
