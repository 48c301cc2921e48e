"""Removing what requests stored, even when NATS is briefly away.

A request's objects are removed when it ends. While the bus is down the names are
kept and removed once it is back, so the client gets its answer at once and nothing
is left behind. At start-up, objects an earlier, crashed gateway left are swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.object_store import ObjectStore

from bus import blobs
from gateway.uploads import UPLOAD_PREFIX

JOBS_MEDIA_PREFIX = "jobs/"  # see gateway.jobs.media.media_name

log = logging.getLogger(__name__)

RETRY_EVERY = 2.0  # seconds between attempts to remove what is still owed


class Janitor:
    """Owns the removal of stored objects once their request has ended.

    Removal runs behind the answer: the client never waits for it (during a leader
    election it can take seconds). What fails stays owed and is tried again.
    """

    def __init__(self, nc: Client, store: ObjectStore) -> None:
        self.nc = nc
        self.store = store
        self.owed: set[str] = set()
        self._settling = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._retrying: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Retry what is owed every RETRY_EVERY seconds until close()."""
        self._retrying = asyncio.create_task(self._retry_forever())

    def remove(self, names: Iterable[str]) -> None:
        """Remove ``names`` soon, in the background; never raises."""
        self.owed.update(names)
        task = asyncio.create_task(self.settle())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settle(self) -> None:
        """Try to remove everything owed; what fails stays owed."""
        async with self._settling:
            if not self.owed or not self.nc.is_connected:
                return
            names = sorted(self.owed)
            try:
                await blobs.delete_quietly(self.store, names)
            except (NatsError, TimeoutError, blobs.BlobsUnavailable) as err:
                log.warning("could not remove %d stored object(s) yet: %s", len(names), err)
                return
            self.owed.difference_update(names)

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(RETRY_EVERY)
            await self.settle()

    async def close(self) -> None:
        """Finish the removals under way, then one last try; what stays owed expires
        with the bucket's TTL."""
        if self._retrying is not None:
            self._retrying.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        with contextlib.suppress(NatsError, TimeoutError, blobs.BlobsUnavailable):
            await self.settle()
        if self.owed:
            log.warning("%d stored object(s) left to the bucket's TTL at shutdown", len(self.owed))


async def sweep_orphans(store: ObjectStore, older_than: float) -> int:
    """Remove objects stored more than ``older_than`` seconds ago; returns how many.

    No live request is that old (it is longer than any request may take), so they are
    what a crashed gateway could not remove.
    """
    cutoff = time.time() - older_than
    stale = [
        info.name
        for info in await blobs.list_infos(store)
        # A job's media (jobs/...) live as long as the job: its expiry removes them.
        if not info.name.startswith(JOBS_MEDIA_PREFIX)
        and (info.mtime is None or _timestamp(info.mtime) < cutoff)
    ]
    await blobs.delete_quietly(store, stale)
    if stale:
        log.info("swept %d object(s) an earlier run left in the blob bucket", len(stale))
    return len(stale)


def sweep_upload_files(directory: str | None, older_than: float) -> int:
    """Remove upload temp files older than ``older_than`` seconds; returns how many.

    Every request removes its own; these are what a killed gateway left behind.
    """
    folder = Path(directory or tempfile.gettempdir())
    cutoff = time.time() - older_than
    swept = 0
    for path in folder.glob(f"{UPLOAD_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):  # another gateway may sweep too
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                swept += 1
    if swept:
        log.info("swept %d upload file(s) an earlier run left in %s", swept, folder)
    return swept


def _timestamp(mtime: str) -> float:
    # JetStream writes RFC 3339 with nanoseconds; Python reads microseconds.
    text = mtime.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()
