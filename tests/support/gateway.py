"""An HTTP client for the real gateway app, served in the caller's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

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
