"""Idempotency keys of job submissions: one KV entry a key, naming the job it made.

The first submission with a key claims it by creating its entry (create fails when it
exists, so two at once cannot both claim it); a later one with the same key reads which
job it made and with what request. Entries expire with the jobs they name.
"""

from __future__ import annotations

import msgspec
from nats.js.client import JetStreamContext
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from bus.blobs import through_elections
from bus.jobs import JobsConfig, ensure_key_value
from contracts.subjects import JOB_KEYS_BUCKET


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
        """The keys' bucket, made unless it exists; a key lives as long as its job."""
        kv = await ensure_key_value(js, JOB_KEYS_BUCKET, config.ttl, config.replicas)
        return cls(js, kv)

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
