"""The blob bucket: how uploads and frames are named, stored, fetched and deleted."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ObjectInfo, ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.object_store import ObjectStore

from bus.settings import Env
from contracts.subjects import BLOB_BUCKET

log = logging.getLogger(__name__)

T = TypeVar("T")

_STREAM_NAME_IN_USE = 10058  # JetStream's error code when the bucket exists already

# Short attempts and a grace longer than a leader election (see through_elections).
ATTEMPT_TIMEOUT = 2.0
ELECTION_GRACE = 15.0


class BlobsUnavailable(Exception):
    """The blob bucket did not answer, even through a leader election's worth of retries."""


def jetstream(nc: Client) -> JetStreamContext:
    """The JetStream context the bucket is used through: its requests give up after
    ATTEMPT_TIMEOUT, so one sent while the stream has no leader is sent again soon."""
    return nc.jetstream(timeout=ATTEMPT_TIMEOUT)


def upload_name(request_id: str, index: int) -> str:
    return f"{request_id}/upload-{index}"


def frame_name(upload: str, index: int) -> str:
    """Frames are named after their upload so the owner can sweep them without a listing."""
    return f"{upload}/frame-{index}"


@dataclass(frozen=True)
class Bucket:
    """How the blob bucket is made, by whichever process makes it first."""

    # Seconds; as long as a job lives (IMGSTORY_JOB_TTL), whose media are kept here.
    # Only the backstop: every request and job deletes its own objects.
    ttl: float = 24 * 3600.0
    replicas: int = 1  # copies across a NATS cluster: 3 there, so a lost node loses nothing


def bucket_settings(read: Env) -> Bucket:
    """The bucket's settings, read the same way by every process that may create it."""
    return Bucket(
        ttl=read.number("IMGSTORY_BLOB_TTL", Bucket.ttl, positive=True),
        replicas=read.integer("IMGSTORY_BLOB_REPLICAS", Bucket.replicas, minimum=1, maximum=5),
    )


async def open_bucket(js: JetStreamContext, bucket: Bucket | None = None) -> ObjectStore:
    """Return the blob bucket, creating it as ``bucket`` says if it is missing."""
    bucket = bucket or Bucket()
    try:
        return await js.object_store(BLOB_BUCKET)
    except BucketNotFoundError:
        pass
    config = ObjectStoreConfig(ttl=bucket.ttl, storage=StorageType.FILE, replicas=bucket.replicas)
    try:
        return await js.create_object_store(BLOB_BUCKET, config=config)
    except BadRequestError as err:
        if err.err_code != _STREAM_NAME_IN_USE:
            raise  # a real refusal (say, replicas a forming cluster cannot place yet)
        # Another process created it first, maybe otherwise: use theirs.
        return await js.object_store(BLOB_BUCKET)


async def put_file(store: ObjectStore, name: str, path: str | os.PathLike[str]) -> None:
    async def put() -> None:
        with open(path, "rb") as f:  # from the start again on every attempt
            await store.put(name, f)

    await through_elections(put, f"storing {name}")


async def put_bytes(store: ObjectStore, name: str, data: bytes) -> None:
    async def put() -> None:
        await store.put(name, data)

    await through_elections(put, f"storing {name}")


async def fetch_to_file(store: ObjectStore, name: str, path: str | os.PathLike[str]) -> None:
    """Stream an object into a file (never whole into memory). Raises NotFoundError."""

    async def fetch() -> None:
        with open(path, "wb") as f:
            await store.get(name, writeinto=f)

    await through_elections(fetch, f"fetching {name}")


async def fetch_bytes(store: ObjectStore, name: str) -> bytes:
    """An object's bytes. Raises NotFoundError."""

    async def fetch() -> bytes:
        # writeinto avoids the client's quadratic bytes concatenation on large objects.
        buf = io.BytesIO()
        await store.get(name, writeinto=buf)
        return buf.getvalue()

    return await through_elections(fetch, f"fetching {name}")


async def delete_quietly(store: ObjectStore, names: Iterable[str]) -> None:
    """Delete each object that exists; missing ones are fine (already gone or never made)."""
    for name in names:

        async def delete(name: str = name) -> None:
            with contextlib.suppress(NotFoundError):
                await store.delete(name)

        await through_elections(delete, f"deleting {name}")


async def list_infos(store: ObjectStore) -> list[ObjectInfo]:
    """The live (not deleted) objects in the bucket."""

    async def listing() -> list[ObjectInfo]:
        try:
            return list(await store.list(ignore_deletes=True))
        except NotFoundError:
            return []

    return await through_elections(listing, "listing the bucket")


async def through_elections(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``operation``, again while the bucket's stream has no leader to answer it.

    When the node leading the stream dies, a three-node cluster elects another in 5 to
    8 s (measured here); an operation sent meanwhile goes unanswered. Storing or
    deleting by name twice is harmless, so such an operation is simply sent again, in
    ATTEMPT_TIMEOUT attempts (see ``jetstream``), for up to ELECTION_GRACE seconds.
    """
    give_up = time.monotonic() + ELECTION_GRACE
    while True:
        try:
            return await operation()
        # A publish to a stream with no leader is refused as "no response from stream"
        # (NoStreamResponseError): nothing was stored, so it too is sent again.
        except (
            TimeoutError,
            NatsTimeoutError,
            NoRespondersError,
            NoStreamResponseError,
            ServiceUnavailableError,
        ) as err:
            if time.monotonic() >= give_up:
                raise BlobsUnavailable(
                    f"the blob store did not answer for {ELECTION_GRACE:g} s"
                ) from err
            log.info("%s: the blob bucket did not answer (%s); trying again", what, err)
            await asyncio.sleep(0.2)


async def list_names(store: ObjectStore) -> list[str]:
    """Names of the live (not deleted) objects in the bucket."""
    return [info.name for info in await list_infos(store)]


async def bucket_answers(store: ObjectStore, timeout: float) -> bool:
    """Whether the bucket's stream answers within ``timeout`` seconds (for readiness)."""
    try:
        await asyncio.wait_for(store.status(), timeout)
    except (NatsError, TimeoutError):
        return False
    return True
