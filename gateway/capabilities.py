"""What the story replicas can do, as they state it in their micro metadata.

Scene perception (labels, faces, OCR) costs about two seconds of CPU per 1080p photo
and only a text-only story model reads its result. Every story replica states whether
its model sees images ($SRV.INFO metadata, ``SEES_IMAGES``); the gateway asks for
scene facts only while some replica cannot see, or while it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from contracts.subjects import SEES_IMAGES, STORY, info_subject

log = logging.getLogger(__name__)


class _Info(msgspec.Struct):
    """The part of a micro INFO answer read here."""

    id: str = ""
    metadata: dict[str, str] | None = None


_info = msgspec.json.Decoder(_Info)


class StoryCapabilities:
    """Keeps track of whether every story replica's model sees images.

    ``refresh`` asks every replica at once and listens for ``window`` seconds;
    ``start`` does that every ``interval`` seconds from then on. Until some replica has
    answered, scene facts are asked for: measuring them needlessly costs time, while
    a text-only model without them writes about nothing.
    """

    def __init__(self, nc: Client, *, interval: float = 10.0, window: float = 0.25) -> None:
        self.nc = nc
        self.interval = interval
        self.window = window
        self._sees: dict[str, bool] | None = None  # replica id -> sees images
        self._task: asyncio.Task[None] | None = None

    @property
    def scene_facts_needed(self) -> bool:
        """True unless every replica heard from last time says its model sees images."""
        if not self._sees:
            return True
        return not all(self._sees.values())

    async def refresh(self) -> None:
        """Ask every story replica what it states; keep the last answer if none replies."""
        heard: dict[str, bool] = {}

        async def collect(msg: Msg) -> None:
            if not msg.data:
                return  # NATS's own "no responders" status: no replica is running
            try:
                info = _info.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("a story replica sent an INFO answer that cannot be read")
                return
            # A replica that states nothing predates the capability: assume text-only.
            heard[info.id] = (info.metadata or {}).get(SEES_IMAGES) == "true"

        inbox = self.nc.new_inbox()
        try:
            subscription = await self.nc.subscribe(inbox, cb=collect)
            try:
                await self.nc.publish(info_subject(STORY), b"", reply=inbox)
                await asyncio.sleep(self.window)
            finally:
                with contextlib.suppress(NatsError):
                    await subscription.unsubscribe()
        except NatsError as err:
            log.debug("could not ask the story replicas what they can do: %s", err)
            return
        if heard and heard != self._sees:
            log.info(
                "story replicas: %d of %d see images; scene facts %s",
                sum(heard.values()),
                len(heard),
                "off" if all(heard.values()) else "on",
            )
        if heard:
            self._sees = heard

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            # Until a replica has answered, ask again soon: requests meanwhile pay for facts.
            await asyncio.sleep(self.interval if self._sees else min(self.interval, 1.0))
            await self.refresh()
