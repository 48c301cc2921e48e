"""What the frames and story replicas can do, as they state it in their micro metadata.

Scene perception (labels, faces, OCR) costs about two seconds of CPU per 1080p photo
and only a text-only story model reads its result: every story replica states whether
its model sees images (``SEES_IMAGES``), and the gateway asks for scene facts only
while some replica cannot see, or while it does not know. Likewise small uploads and
frames travel inside the messages, skipping the blob bucket, only while every replica
that would receive them states that it reads them (``INLINE_UPLOADS``,
``INLINE_FRAMES``): a replica of an older version never gets what it cannot read.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bus.discovery import ask_every_replica
from contracts.subjects import (
    BY_PARAGRAPH,
    FRAMES,
    INLINE_FRAMES,
    INLINE_UPLOADS,
    SEES_IMAGES,
    STORY,
    TRANSLATION,
    ServiceSpec,
    info_subject,
)

log = logging.getLogger(__name__)


class _Info(msgspec.Struct):
    """The part of a micro INFO answer read here."""

    id: str = ""
    name: str = ""
    metadata: dict[str, str] | None = None


_info = msgspec.json.Decoder(_Info)

WATCHED = (FRAMES, STORY, TRANSLATION)


class Capabilities:
    """Keeps track of what every frames and story replica states it can do.

    ``refresh`` asks every replica at once and listens for ``window`` seconds;
    ``start`` does that every ``interval`` seconds from then on. A service none of
    whose replicas has answered yet is assumed to state nothing: scene facts are
    asked for and nothing travels inline until the replicas say otherwise.
    """

    def __init__(self, nc: Client, *, interval: float = 10.0, window: float = 0.25) -> None:
        self.nc = nc
        self.interval = interval
        self.window = window
        # service name -> replica id -> what it states
        self._stated: dict[str, dict[str, dict[str, str]]] = {}
        self._task: asyncio.Task[None] | None = None

    def _all_state(self, service: ServiceSpec, key: str) -> bool:
        replicas = self._stated.get(service.name, {})
        return bool(replicas) and all(m.get(key) == "true" for m in replicas.values())

    @property
    def scene_facts_needed(self) -> bool:
        """True unless every story replica heard from last time says its model sees images."""
        return not self._all_state(STORY, SEES_IMAGES)

    @property
    def translate_by_paragraph(self) -> bool:
        """Every translation replica gains from paragraphs translated side by side."""
        return self._all_state(TRANSLATION, BY_PARAGRAPH)

    @property
    def inline_uploads(self) -> bool:
        """Every frames replica reads uploads sent inside the request."""
        return self._all_state(FRAMES, INLINE_UPLOADS)

    @property
    def inline_frames(self) -> bool:
        """Every story replica reads frames sent inside the request."""
        return self._all_state(STORY, INLINE_FRAMES)

    async def refresh(self) -> None:
        """Ask every replica what it states; a service none answers keeps its last answer."""
        subjects = [info_subject(spec) for spec in WATCHED]
        try:
            answers = await ask_every_replica(self.nc, subjects, _info, self.window)
        except NatsError as err:
            log.debug("could not ask the replicas what they can do: %s", err)
            return
        names = {spec.name for spec in WATCHED}
        heard: dict[str, dict[str, dict[str, str]]] = {}
        for info in answers:
            if info.name in names:
                heard.setdefault(info.name, {})[info.id] = info.metadata or {}
        changed = {name: replicas for name, replicas in heard.items() if replicas}
        before = self._summary()
        self._stated.update(changed)
        if self._summary() != before:
            log.info("replicas: %s", self._summary())

    def _summary(self) -> str:
        return (
            f"scene facts {'on' if self.scene_facts_needed else 'off'}, "
            f"small uploads {'inline' if self.inline_uploads else 'stored'}, "
            f"small frames {'inline' if self.inline_frames else 'stored'}, "
            f"Thai {'by paragraph' if self.translate_by_paragraph else 'whole'}"
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            # Until every watched service has answered, ask again soon.
            known = all(self._stated.get(spec.name) for spec in WATCHED)
            await asyncio.sleep(self.interval if known else min(self.interval, 1.0))
            await self.refresh()
