"""The blob bucket: how uploads and frames are named, stored, fetched and deleted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    ObjectInfo,
    ObjectMeta,
    ObjectMetaOptions,
    ObjectStoreConfig,
    StorageType,
)
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadObjectMetaError,
    BadRequestError,
    BucketNotFoundError,
    DigestMismatchError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.object_store import ObjectStore

from bus.settings import Env
from contracts.subjects import BLOB_BUCKET

log = logging.getLogger(__name__)

T = TypeVar("T")

BLOB_STREAM = f"OBJ_{BLOB_BUCKET}"  # the bucket's stream, as JetStream names it
_STREAM_NAME_IN_USE = 10058  # JetStream's error code when the bucket exists already

# Objects are stored in chunks of this size: each is a publish JetStream acknowledges,
# and a 4.5 MB photo took 40 ms to store in nats-py's 128 kB chunks, 20 ms in these
# (512 kB: 19 ms). NATS's max_payload (1 MB unless lowered) must hold one.
CHUNK_BYTES = 256 * 1024
# Chunks asked for at once when reading an object: 32 x 256 kB, 8 MB held at most.
READ_BATCH = 32
READ_IDLE_SECONDS = 30.0  # a reader's consumer outlives its last pull this long at most

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


class BlobStore(ObjectStore):
    """The blob bucket, keeping the JetStream context it is used through (``read_object``
    reads its chunks with a consumer of its own)."""

    def __init__(self, js: JetStreamContext) -> None:
        super().__init__(name=BLOB_BUCKET, stream=BLOB_STREAM, js=js)
        self.js = js


async def open_bucket(js: JetStreamContext, bucket: Bucket | None = None) -> BlobStore:
    """Return the blob bucket, creating it as ``bucket`` says if it is missing."""
    bucket = bucket or Bucket()
    try:
        await js.object_store(BLOB_BUCKET)
        return BlobStore(js)
    except BucketNotFoundError:
        pass
    config = ObjectStoreConfig(ttl=bucket.ttl, storage=StorageType.FILE, replicas=bucket.replicas)
    try:
        await js.create_object_store(BLOB_BUCKET, config=config)
    except BadRequestError as err:
        if err.err_code != _STREAM_NAME_IN_USE:
            raise  # a real refusal (say, replicas a forming cluster cannot place yet)
        # Another process created it first, maybe otherwise: use theirs.
    return BlobStore(js)


def _chunked(name: str) -> ObjectMeta:
    return ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))


async def put_file(store: ObjectStore, name: str, path: str | os.PathLike[str]) -> None:
    async def put() -> None:
        with open(path, "rb") as f:  # from the start again on every attempt
            await store.put(name, f, meta=_chunked(name))

    await through_elections(put, f"storing {name}")


async def put_bytes(store: ObjectStore, name: str, data: bytes) -> None:
    async def put() -> None:
        await store.put(name, data, meta=_chunked(name))

    await through_elections(put, f"storing {name}")


async def fetch_to_file(store: BlobStore, name: str, path: str | os.PathLike[str]) -> None:
    """Stream an object into a file (never whole into memory). Raises NotFoundError."""

    async def fetch() -> None:
        with open(path, "wb") as f:
            await read_object(store, name, f.write)

    await through_elections(fetch, f"fetching {name}")


async def fetch_bytes(store: BlobStore, name: str) -> bytes:
    """An object's bytes. Raises NotFoundError."""

    async def fetch() -> bytes:
        buf = io.BytesIO()
        await read_object(store, name, buf.write)
        return buf.getvalue()

    return await through_elections(fetch, f"fetching {name}")


async def copy_object(store: BlobStore, source: str, target: str, directory: str | None) -> None:
    """Store a copy of object ``source`` as ``target``, through a temp file in
    ``directory`` (a 50 MB video is never whole in memory). Raises NotFoundError."""
    with tempfile.NamedTemporaryFile(prefix="imgstory-copy-", dir=directory) as file:
        await fetch_to_file(store, source, file.name)
        await put_file(store, target, file.name)


async def read_object(store: BlobStore, name: str, write: Callable[[bytes], object]) -> None:
    """Hand each of the object's chunks, in order, to ``write``; its digest is checked.

    Read with a pull consumer of its own, asked for READ_BATCH chunks at a time. nats-py's
    ``ObjectStore.get`` reads through an ordered push consumer and spends most of its time
    waiting for the server's next delivery: 261 ms for a 4.5 MB object that this reads in
    8 ms (median of 7 on one local nats-server; ``make bench-frames`` shows the frame
    stage). Raises NotFoundError for a missing object, DigestMismatchError for a damaged one.
    """
    info = await store.get_info(name)
    if not info.nuid or not info.digest or info.is_link():
        raise BadObjectMetaError
    if not info.size:
        return
    js, stream = store.js, BLOB_STREAM
    chunks = f"$O.{BLOB_BUCKET}.C.{info.nuid}"  # where the object's chunks are stored
    count = info.chunks or 0
    consumer = await js.add_consumer(
        stream,
        ConsumerConfig(
            filter_subject=chunks,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=READ_IDLE_SECONDS,  # gone by itself if this reader dies
            num_replicas=1,
            mem_storage=True,
        ),
    )
    try:
        subscription = await js.pull_subscribe_bind(consumer.name, stream=stream)
        try:
            digest = hashlib.sha256()
            received = 0
            while received < count:
                wanted = min(READ_BATCH, count - received)
                for msg in await subscription.fetch(wanted, timeout=ATTEMPT_TIMEOUT):
                    digest.update(msg.data)
                    write(msg.data)
                    received += 1
        finally:
            await subscription.unsubscribe()
    finally:
        with contextlib.suppress(NatsError):
            await js.delete_consumer(stream, consumer.name)
    expected = base64.urlsafe_b64decode(info.digest.removeprefix("SHA-256="))
    if digest.digest() != expected:
        raise DigestMismatchError


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
