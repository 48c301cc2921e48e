"""Idempotency keys of job submissions: one KV entry a key, naming the job it made.

The first submission with a key claims it by creating its entry (create fails when it
exists, so two at once cannot both claim it); a later one with the same key reads which
job it made and with what request. Entries expire with the jobs they name.
"""

from __future__ import annotations

import msgspec
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from bus.blobs import through_elections
from bus.jobs import JobsConfig
from contracts.subjects import JOB_KEYS_BUCKET

_STREAM_NAME_IN_USE = 10058


class KeyClaim(msgspec.Struct, frozen=True):
    """Which job a key made, and a digest of the request that made it."""

    job_id: str
    fingerprint: str


_claims = msgspec.msgpack.Decoder(KeyClaim)


class JobKeys:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, config: JobsConfig) -> JobKeys:
        try:
            return cls(js, await js.key_value(JOB_KEYS_BUCKET))
        except BucketNotFoundError:
            pass
        bucket = KeyValueConfig(
            bucket=JOB_KEYS_BUCKET,
            history=1,
            ttl=config.ttl,
            storage=StorageType.FILE,
            replicas=config.replicas,
        )
        try:
            return cls(js, await js.create_key_value(bucket))
        except BadRequestError as err:
            if err.err_code != _STREAM_NAME_IN_USE:
                raise
            return cls(js, await js.key_value(JOB_KEYS_BUCKET))

    async def claim(self, name: str, claim: KeyClaim) -> KeyClaim | None:
        """Claim ``name`` for ``claim``; None when this call claimed it, else the claim
        that holds it. ``name`` is a KV key (letters, digits, ``-_=./``)."""
        data = msgspec.msgpack.encode(claim)
        try:
            await through_elections(lambda: self.kv.create(name, data), "claiming a key")
        except KeyWrongLastSequenceError:
            held = await self.held(name)
            return held if held is not None else await self.claim(name, claim)
        return None

    async def held(self, name: str) -> KeyClaim | None:
        try:
            entry = await through_elections(lambda: self.kv.get(name), "reading a key")
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return _claims.decode(entry.value) if entry.value else None

    async def forget(self, name: str) -> None:
        """Release the key (its job is gone, or was never made)."""
        await through_elections(
            lambda: self.js.purge_stream(
                f"KV_{JOB_KEYS_BUCKET}", subject=f"$KV.{JOB_KEYS_BUCKET}.{name}"
            ),
            "forgetting a key",
        )
