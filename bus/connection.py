"""Connecting to NATS as every ImgStory process does: servers, credentials, a terse log."""

from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.errors import NoServersError, StaleConnectionError

from bus.settings import Env, SettingsError

log = logging.getLogger(__name__)


def server_list(url: str) -> list[str]:
    """The servers in ``NATS_URL``: one URL, or a cluster's comma-separated seed list."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("NATS_URL names no server")
    return servers


class _ConnectionLog:
    """Tells the connection's story in one line per change of state.

    nats-py's default error callback logs a traceback for every failed reconnect
    attempt; the loss of the server is news once, and its return once.
    """

    # What a lost or refused connection raises: the disconnect line says it all.
    CONNECTIVITY = (OSError, TimeoutError, StaleConnectionError, NoServersError)

    def __init__(self, name: str) -> None:
        self.name = name
        self.client: Client | None = None
        self.down = False

    async def error(self, err: Exception) -> None:
        if isinstance(err, self.CONNECTIVITY):
            log.debug("%s: NATS: %s", self.name, err)
            return
        log.warning("%s: NATS: %s", self.name, str(err) or type(err).__name__)

    async def disconnected(self) -> None:
        if self.client is not None and self.client.is_closed:
            return  # we closed it ourselves
        if not self.down:
            self.down = True
            log.warning("%s lost its NATS connection; reconnecting", self.name)

    async def reconnected(self) -> None:
        self.down = False
        log.info("%s reconnected to NATS", self.name)


@dataclass(frozen=True)
class Credentials:
    """Who a process is on a locked-down NATS (deploy/nats/nats.conf), and whom its TLS trusts."""

    user: str | None = None
    password: str | None = None
    tls_ca: str | None = None  # a CA bundle: the connection must be TLS, checked against it

    @property
    def inbox_prefix(self) -> str:
        """Replies come back under the user's own prefix: the only inboxes it may read."""
        return f"_INBOX.{self.user}" if self.user else "_INBOX"


_USER = re.compile(r"[A-Za-z0-9_-]+")


def credentials(read: Env) -> Credentials:
    """``NATS_USER``, ``NATS_PASSWORD`` and ``NATS_TLS_CA``; none set is an open server.

    Raises SettingsError for a user without a password (or the reverse), or a user
    name that cannot be a subject token (it names the process's inboxes).
    """
    user, password = read.optional("NATS_USER"), read.optional("NATS_PASSWORD")
    if (user is None) != (password is None):
        raise SettingsError("NATS_USER and NATS_PASSWORD must be set together")
    if user is not None and not _USER.fullmatch(user):
        raise SettingsError(f"NATS_USER must be letters, digits, - or _, not {user!r}")
    return Credentials(user=user, password=password, tls_ca=read.optional("NATS_TLS_CA"))


async def connect(url: str, name: str, login: Credentials | None = None) -> Client:
    """Connect to NATS as every ImgStory process does: reconnect for ever, log tersely.

    ``login`` defaults to the process's ``credentials`` from its environment, the same
    variables for every process. Raises SettingsError for bad credentials settings and
    nats.errors.Error subclasses only for bad URLs; an unreachable server is retried
    until it answers.
    """
    login = login if login is not None else credentials(Env(os.environ))
    story = _ConnectionLog(name)
    story.client = await nats.connect(
        servers=server_list(url),
        name=name,
        user=login.user,
        password=login.password,
        inbox_prefix=login.inbox_prefix,
        tls=ssl.create_default_context(cafile=login.tls_ca) if login.tls_ca else None,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        error_cb=story.error,
        disconnected_cb=story.disconnected,
        reconnected_cb=story.reconnected,
    )
    return story.client
