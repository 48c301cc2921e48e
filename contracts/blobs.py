"""The blob bucket: how uploads and frames are named, stored, fetched and deleted."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable

from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from contracts.subjects import BLOB_BUCKET

log = logging.getLogger(__name__)


def upload_name(request_id: str, index: int) -> str:
    return f"{request_id}/upload-{index}"


def frame_name(upload: str, index: int) -> str:
    """Frames are named after their upload so the owner can sweep them without a listing."""
    return f"{upload}/frame-{index}"


async def open_bucket(js: JetStreamContext, ttl: float) -> ObjectStore:
    """Return the blob bucket, creating it with ``ttl`` seconds of retention if missing.

    The TTL is the backstop: every request deletes what it stored when it ends.
    """
    try:
        return await js.object_store(BLOB_BUCKET)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_object_store(
            BLOB_BUCKET, config=ObjectStoreConfig(ttl=ttl, storage=StorageType.FILE)
        )
    except BadRequestError:
        # Another process created it first, maybe with another TTL: use theirs.
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


async def list_names(store: ObjectStore) -> list[str]:
    """Names of the live (not deleted) objects in the bucket."""
    try:
        infos = await store.list(ignore_deletes=True)
    except NotFoundError:
        return []
    return [info.name for info in infos]
