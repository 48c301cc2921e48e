"""Stop work for a client that went away: nobody would read its answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from litestar import Request

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it (and raise ClientGone) if the client disconnects first.

    Call it once the request body has been read: from then on the server's next
    ASGI message is the disconnect, if one comes.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not watcher.done():
            watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled() and watcher.done() and not watcher.cancelled():
        log.info(
            "%s %s: the client went away; its analysis was stopped",
            request.method,
            request.url.path,
        )
        raise ClientGone("the client closed the connection")
    return task.result()


async def _disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
