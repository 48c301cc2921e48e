"""The blob bucket: how uploads and frames are named, stored, fetched and deleted."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js.api import ObjectInfo, ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from contracts.settings import Env
from contracts.subjects import BLOB_BUCKET

log = logging.getLogger(__name__)


def upload_name(request_id: str, index: int) -> str:
    return f"{request_id}/upload-{index}"


def frame_name(upload: str, index: int) -> str:
    """Frames are named after their upload so the owner can sweep them without a listing."""
    return f"{upload}/frame-{index}"


@dataclass(frozen=True)
class Bucket:
    """How the blob bucket is made, by whichever process makes it first."""

    ttl: float = 900.0  # seconds; the backstop only: every request deletes its objects
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
    except BadRequestError:
        # Another process created it first, maybe otherwise: use theirs.
        return await js.object_store(BLOB_BUCKET)


async def put_file(store: ObjectStore, name: str, path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        await store.put(name, f)


async def put_bytes(store: ObjectStore, name: str, data: bytes) -> None:
    await store.put(name, data)


async def fetch_to_file(store: ObjectStore, name: str, path: str | os.PathLike) -> None:
    """Stream an object into a file (never whole into memory). Raises NotFoundError."""
    with open(path, "wb") as f:
        await store.get(name, writeinto=f)


async def fetch_bytes(store: ObjectStore, name: str) -> bytes:
    # writeinto avoids the client's quadratic bytes concatenation on large objects.
    buf = io.BytesIO()
    await store.get(name, writeinto=buf)
    return buf.getvalue()


async def delete_quietly(store: ObjectStore, names: Iterable[str]) -> None:
    """Delete each object that exists; missing ones are fine (already gone or never made)."""
    for name in names:
        try:
            await store.delete(name)
        except NotFoundError:
            continue


async def list_infos(store: ObjectStore) -> list[ObjectInfo]:
    """The live (not deleted) objects in the bucket."""
    try:
        return list(await store.list(ignore_deletes=True))
    except NotFoundError:
        return []


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
