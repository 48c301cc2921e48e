"""Reading objects back from the blob bucket (bus.blobs.read_object) on a real NATS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus import blobs
from contracts.subjects import BLOB_BUCKET


@pytest.fixture
async def bucket(nc: Client):
    store = await blobs.open_bucket(blobs.jetstream(nc))
    yield store
    await blobs.delete_quietly(store, ["test-blobs/big", "test-blobs/empty", "test-blobs/one"])


async def readers_of(nc: Client, store: blobs.BlobStore, name: str) -> int:
    """Consumers on the bucket's stream reading ``name``'s chunks (other tests' consumers
    come and go on the shared server, so only these are counted)."""
    chunks = f"$O.{BLOB_BUCKET}.C.{(await store.get_info(name)).nuid}"
    consumers = await nc.jetstream().consumers_info(blobs.BLOB_STREAM)
    return sum(consumer.config.filter_subject == chunks for consumer in consumers)


async def test_an_object_of_many_batches_comes_back_whole_and_in_order(
    nc: Client, bucket: blobs.BlobStore, tmp_path: Path
) -> None:
    # More chunks than one pull asks for: the reader asks again until it has them all.
    data = os.urandom(blobs.CHUNK_BYTES * (blobs.READ_BATCH + 7) + 1234)
    await blobs.put_bytes(bucket, "test-blobs/big", data)
    copy = tmp_path / "copy"
    await blobs.fetch_to_file(bucket, "test-blobs/big", copy)
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert await blobs.fetch_bytes(bucket, "test-blobs/big") == data
    info = await bucket.get_info("test-blobs/big")
    assert info.chunks == blobs.READ_BATCH + 8  # stored in CHUNK_BYTES pieces
    # Each read's consumer is removed when it is done, not left to time out.
    assert await readers_of(nc, bucket, "test-blobs/big") == 0


async def test_small_and_empty_objects_read_back(bucket: blobs.BlobStore) -> None:
    await blobs.put_bytes(bucket, "test-blobs/one", b"jpeg")
    await blobs.put_bytes(bucket, "test-blobs/empty", b"")
    assert await blobs.fetch_bytes(bucket, "test-blobs/one") == b"jpeg"
    assert await blobs.fetch_bytes(bucket, "test-blobs/empty") == b""


async def test_a_missing_object_is_not_found(bucket: blobs.BlobStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        await blobs.fetch_bytes(bucket, "test-blobs/never-stored")
    await blobs.put_bytes(bucket, "test-blobs/one", b"jpeg")
    await blobs.delete_quietly(bucket, ["test-blobs/one"])
    with pytest.raises(NotFoundError):
        await blobs.fetch_to_file(bucket, "test-blobs/one", tmp_path / "copy")
