"""Ask every replica at once: micro's $SRV.INFO and $SRV.STATS answer from each of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)

T = TypeVar("T")


async def ask_every_replica(
    nc: Client, subjects: Iterable[str], decoder: msgspec.json.Decoder[T], window: float
) -> list[T]:
    """Send an empty request on each subject and gather every answer for ``window`` s.

    Answers that cannot be read are logged and skipped, as are NATS's own empty "no
    responders" statuses. Raises nats.errors.Error when the bus refuses or is down.
    """
    heard: list[T] = []

    async def collect(msg: Msg) -> None:
        if not msg.data:
            return  # NATS's own "no responders" status: no replica is running
        try:
            heard.append(decoder.decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("a replica's answer on %s cannot be read", msg.subject)

    subscription = await nc.subscribe(nc.new_inbox(), cb=collect)
    try:
        for subject in subjects:
            await nc.publish(subject, b"", reply=subscription.subject)
        await asyncio.sleep(window)
    finally:
        with contextlib.suppress(NatsError):
            await subscription.unsubscribe()
    return heard
