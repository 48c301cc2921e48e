"""What a job's webhook is: its settings, the checks on its target, its signature.

A job submitted with a ``webhook_url`` is told when it ends by a POST signed per the
Standard Webhooks spec (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), so
a receiver verifies it with any of that spec's libraries. The target is checked at
submission and again before every try: its host must resolve to public addresses only
(no loopback, private, link-local, multicast or reserved address, IPv4 or IPv6), since
the gateway sits inside the operator's network and a URL is the caller's to choose.
The delivery itself (the queue, the tries) is in ``deliveries.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

from bus.settings import Env, SettingsError

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the spec's lower bound: 192 bits
MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT = 5.0  # seconds a host name may take to resolve

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # IPv4 hosts as an IPv6-only network sees them


@dataclass(frozen=True)
class WebhookSettings:
    """Webhooks on this server: off (no secret) or signed with ``secret``'s bytes."""

    secret: bytes | None = field(default=None, repr=False)
    allow_private: bool = False  # targets on loopback and private networks (tests, intranets)
    # Tries go on this long after the first one (the spec's schedules span about a day).
    retry_for: float = 24 * 3600.0
    timeout: float = 10.0  # seconds for one try: connecting, sending, the answer
    senders: int = 4  # deliveries this replica makes at once; 0 makes none
    first_backoff: float = 5.0  # seconds before the second try; each next waits 4x longer
    max_backoff: float = 3600.0  # ... up to this

    @property
    def enabled(self) -> bool:
        return self.secret is not None


def load(read: Env) -> WebhookSettings:
    """The webhook settings from the environment. Raises SettingsError naming the variable."""
    return WebhookSettings(
        secret=parse_secret(read.optional("IMGSTORY_WEBHOOK_SECRET")),
        allow_private=read.flag("IMGSTORY_WEBHOOK_ALLOW_PRIVATE", WebhookSettings.allow_private),
        retry_for=read.number(
            "IMGSTORY_WEBHOOK_RETRY_FOR", WebhookSettings.retry_for, positive=True
        ),
        timeout=read.number(
            # Within the queue's ACK_WAIT, with the host's lookup, so no try outlives it.
            "IMGSTORY_WEBHOOK_TIMEOUT",
            WebhookSettings.timeout,
            positive=True,
            maximum=30,
        ),
        senders=read.integer(
            "IMGSTORY_WEBHOOK_SENDERS", WebhookSettings.senders, minimum=0, maximum=256
        ),
    )


def parse_secret(text: str | None) -> bytes | None:
    """A ``whsec_``-prefixed base64 secret's bytes; None for no text (webhooks off).

    Raises SettingsError, which never quotes the text: it is a secret.
    """
    if text is None:
        return None
    name = "IMGSTORY_WEBHOOK_SECRET"
    if not text.startswith(SECRET_PREFIX):
        raise SettingsError(f"{name} must be {SECRET_PREFIX} followed by base64")
    encoded = text.removeprefix(SECRET_PREFIX)
    try:
        secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise SettingsError(f"{name}: what follows {SECRET_PREFIX} is not base64") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"{name} must hold at least {MIN_SECRET_BYTES} bytes, not {len(secret)}"
            " (openssl rand -base64 32 makes one)"
        )
    return secret


# --- the target ------------------------------------------------------------------------


class WebhookRefused(Exception):
    """A webhook URL this server will not call; ``detail`` can be shown to the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class HostUnresolved(WebhookRefused):
    """The host did not resolve: at submission a refusal, at delivery a reason to retry."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the addresses its host had when checked."""

    url: httpx.URL
    addresses: tuple[str, ...]

    def pinned(self, address: str) -> httpx.URL:
        """The URL with its host replaced by ``address``, so no second lookup can differ."""
        return self.url.copy_with(host=address)


async def check_target(url: str, settings: WebhookSettings) -> str:
    """The URL, normalised, if this server may POST a job's webhook to it.

    Raises WebhookRefused (its ``detail`` is client-safe) for webhooks off, a malformed
    URL, or a host that does not resolve or resolves to a non-public address.
    """
    return str((await resolve(url, settings)).url)


async def resolve(url: str, settings: WebhookSettings) -> Target:
    """``check_target``'s checks, keeping the addresses the host resolved to."""
    if not settings.enabled:
        raise WebhookRefused("webhooks are not enabled on this server")
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _addresses(host, port)
    if not settings.allow_private:
        for address in addresses:
            if not is_public(ipaddress.ip_address(address)):
                raise WebhookRefused(
                    "the webhook URL's host is not a public address; webhooks go only to"
                    " hosts on the internet"
                )
    return Target(parsed, addresses)


def _parse(url: str) -> httpx.URL:
    if len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        raise WebhookRefused("the webhook URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookRefused("the webhook URL must start with https:// or http://")
    if not parsed.raw_host:
        raise WebhookRefused("the webhook URL has no host")
    if parsed.userinfo:
        raise WebhookRefused("the webhook URL must not carry a user name or password")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise WebhookRefused("the webhook URL's port is out of range")
    default = 443 if parsed.scheme == "https" else 80
    return parsed.copy_with(fragment=None, port=None if parsed.port == default else parsed.port)


async def _addresses(host: str, port: int) -> tuple[str, ...]:
    """The host's addresses, in the order to try them; resolved off the event loop."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, UnicodeError, TimeoutError):
        raise HostUnresolved("the webhook URL's host does not resolve") from None
    # An IPv6 link-local address comes back with its zone ("fe80::1%eth0"): not public.
    addresses = tuple(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not addresses:
        raise HostUnresolved("the webhook URL's host does not resolve")
    return addresses


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is an internet address, not one of the operator's own networks.

    An IPv6 address that embeds an IPv4 one (IPv4-mapped, 6to4, NAT64) is judged by it:
    ``::ffff:127.0.0.1`` is loopback however it is spelt.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


# --- the signature ---------------------------------------------------------------------


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of
    ``{id}.{timestamp}.{body}`` keyed with the secret's bytes."""
    signed = b".".join((webhook_id.encode(), str(timestamp).encode(), body))
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one try: the spec's three and the body's type."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }
