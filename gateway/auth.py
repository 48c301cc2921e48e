"""API keys: which keys the gateway accepts, and whether a request carries one of them.

Keys are kept only as sha256 digests, and a presented key is hashed and compared with
every accepted digest in constant time, so neither the keys nor their timing leak.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SHA256_ENTRY = re.compile(r"sha256:([0-9a-fA-F]{64})")
_BEARER = re.compile(r"bearer[ \t]+(\S+)[ \t]*", re.IGNORECASE)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True, repr=False)
class ApiKeys:
    """The accepted keys as sha256 digests; empty means keys are off."""

    digests: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> ApiKeys:
        """Keys from entries: a key in clear, or ``sha256:<64 hex digits>`` of one.

        Blank entries and ``#`` comments are skipped. Raises ValueError naming the entry
        by its position only, never by its text (it may be a key).
        """
        digests: list[bytes] = []
        for number, raw in enumerate(entries, start=1):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.lower().startswith("sha256:"):
                hashed = _SHA256_ENTRY.fullmatch(entry)
                if hashed is None:
                    raise ValueError(f"entry {number} is not sha256: and 64 hex digits")
                digests.append(bytes.fromhex(hashed.group(1)))
            else:
                digests.append(_digest(entry))
        if not digests:
            raise ValueError("it names no key")
        return cls(tuple(dict.fromkeys(digests)))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self.digests)} keys)"

    def identify(self, presented: str) -> str | None:
        """The id of the accepted key ``presented`` is (its digest, hex), or None.

        Every accepted digest is compared, whichever matches, so the time taken says
        nothing about which key or how much of one was right.
        """
        digest = _digest(presented)
        found: bytes | None = None
        for accepted in self.digests:
            if hmac.compare_digest(digest, accepted):
                found = accepted
        return None if found is None else found.hex()


def presented_keys(headers: Mapping[str, str]) -> list[str]:
    """The keys a request offers: ``Authorization: Bearer <key>`` and ``X-API-Key: <key>``."""
    keys = []
    if (bearer := _BEARER.fullmatch(headers.get("authorization", ""))) is not None:
        keys.append(bearer.group(1))
    if api_key := headers.get("x-api-key", "").strip():
        keys.append(api_key)
    return keys


def key_label(key_id: str) -> str:
    """How logs name a key: the start of its sha256, which says nothing of the key.

    An operator finds which key it is with ``printf %s "$KEY" | sha256sum``.
    """
    return f"key sha256:{key_id[:12]}"


def announce_keys(page: str, keys: ApiKeys) -> str:
    """The web page, told whether it must ask its user for a key before sending."""
    return page.replace('data-api-key="off"', f'data-api-key="{"required" if keys else "off"}"')
