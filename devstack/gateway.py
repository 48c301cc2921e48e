"""The real gateway for a caller: its app served in the caller's event loop, or
`python -m gateway` as a process of its own."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from devstack.processes import ProcessGroup, service_env, wait_for_port
from gateway import config as gateway_config
from gateway.app import create_app


@asynccontextmanager
async def gateway_client(settings: gateway_config.Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the real app, served in this event loop.

    Litestar's AsyncTestClient runs the app in a portal thread and blocks this loop
    while it waits, which would starve the in-process services of the same loop.
    """
    app = create_app(settings)
    async with app.lifespan():
        # A Litestar app is an ASGI app; its signature is only typed more narrowly than httpx's.
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # see above
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as client:
            yield client


@asynccontextmanager
async def running_gateway(
    nats_url: str, port: int, **extra: str
) -> AsyncIterator[subprocess.Popen[Any]]:
    """`python -m gateway` on `port`, listening inside the block and stopped by SIGTERM after it.

    `extra` are further environment variables for it. The block gets the process.
    Raises RuntimeError if it exits at start-up or does not listen within 15 s.
    """
    env = service_env(nats_url, IMGSTORY_PORT=str(port))
    env.update(extra)
    async with ProcessGroup(grace=20) as group:
        process = group.python("gateway", "gateway", env=env)
        await wait_for_port(port, process)
        yield process
