"""NATS locked down: deploy/nats/nats.conf, as compose runs it, gives each process only its own.

The server is started from the very file compose mounts (only its address, port and store
are overridden); each probe logs in as one of its users. A permission the server refuses
is reported to the client as an error (``nats: permissions violation for subscription to
"…"`` or ``… for publish to "…"``) before the answer to the PING that ``flush`` sends, so a
probe that has flushed knows; the tests also check that nothing got through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.object_store import ObjectStore

from bus import blobs, connection
from bus.server import Server
from bus.settings import Env, SettingsError
from contracts.subjects import (
    BLOB_BUCKET,
    EXTRACT_FRAMES,
    FRAMES,
    STORY,
    TRANSLATE,
    TRANSLATION,
    WRITE_STORY,
    cancel_subject,
    info_subject,
    ping_subject,
    progress_subject,
)
from devstack.fake_openai import FakeOpenAI
from devstack.gateway import gateway_client
from devstack.nats_server import NatsServer
from devstack.processes import ROOT, free_port, service_env
from devstack.services import fake_model_settings
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from gateway import config as gateway_config
from story_service import config as story_config
from story_service.service import start_service as start_story
from tests.media import sample_photo
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation

CONFIG = ROOT / "deploy" / "nats" / "nats.conf"

# The variable nats-server reads each user's password from, as compose sets it.
PASSWORD_VARIABLES = {
    "gateway": "IMGSTORY_NATS_GATEWAY_PASSWORD",
    "frames": "IMGSTORY_NATS_FRAMES_PASSWORD",
    "story": "IMGSTORY_NATS_STORY_PASSWORD",
    "translation": "IMGSTORY_NATS_TRANSLATION_PASSWORD",
}
PASSWORDS = {user: f"test-{user}-pw" for user in PASSWORD_VARIABLES}

STREAM = f"OBJ_{BLOB_BUCKET}"
ENDPOINTS = {
    "frames": EXTRACT_FRAMES.subject,
    "story": WRITE_STORY.subject,
    "translation": TRANSLATE.subject,
}
# What no user may subscribe to: another's endpoint, the raw blob subjects (reading goes
# through JetStream, which checks the stream permissions), and anyone's replies.
NOT_YOURS = {
    "gateway": [*ENDPOINTS.values(), "$O.imgstory-blobs.>", "_INBOX.>", "_INBOX.frames.>"],
    "frames": [
        WRITE_STORY.subject,
        TRANSLATE.subject,
        "$O.imgstory-blobs.>",
        "_INBOX.gateway.>",
        progress_subject("r1"),
        "$SRV.PING.imgstory-story",
    ],
    "story": [
        EXTRACT_FRAMES.subject,
        TRANSLATE.subject,
        "$O.imgstory-blobs.>",
        "_INBOX.>",
        "_INBOX.frames.>",
        "$SRV.INFO.imgstory-frames",
    ],
    "translation": [
        EXTRACT_FRAMES.subject,
        WRITE_STORY.subject,
        "$O.imgstory-blobs.>",
        "_INBOX.gateway.>",
        "_INBOX.story.>",
        progress_subject("r1"),
        ">",
    ],
}


@dataclass
class Login:
    """A client logged in as one user, keeping what the server refused it."""

    user: str
    nc: Client
    refusals: list[str] = field(default_factory=list)

    async def refused(self, verb: str, subject: str, within: float = 2.0) -> bool:
        """Whether the server refused ``verb`` ("subscription" or "publish") on ``subject``
        (a subject's start will do) within ``within`` seconds.

        The refusal usually arrives before the PONG that ``flush`` waits for, but not
        always (measured: about one in three), so it is waited for.
        """
        said = f'permissions violation for {verb} to "{subject}'.lower()
        deadline = asyncio.get_running_loop().time() + within
        while not any(said in refusal for refusal in self.refusals):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def subscribe_refused(self, subject: str, heard: list[Msg] | None = None) -> bool:
        """Subscribe (keeping what arrives in ``heard``); whether the server refused it."""

        await self.nc.subscribe(subject, cb=partial(_keep, [] if heard is None else heard))
        await self.nc.flush()
        return await self.refused("subscription", subject)

    async def publish_refused(self, subject: str) -> bool:
        """Publish an empty message (a JetStream API request, say); whether it was refused."""
        await self.nc.publish(subject, b"", reply=self.nc.new_inbox())
        await self.nc.flush()
        return await self.refused("publish", subject)

    async def bucket(self) -> ObjectStore:
        return await blobs.open_bucket(self.nc.jetstream(timeout=0.5))


async def _keep(heard: list[Msg], msg: Msg) -> None:
    heard.append(msg)


# nats-py's flush sends its PING ahead of commands still buffered, so a subscription may
# reach the server after flush returns: what must arrive is sent until it does.


async def _request_soon(nc: Client, subject: str, within: float = 3.0) -> Msg:
    """A request to ``subject``, sent again while it has no responders yet."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await nc.request(subject, b"request", timeout=1)
        except NoRespondersError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


async def _delivered(nc: Client, subject: str, heard: list[Msg], within: float = 3.0) -> bool:
    """Publish to ``subject`` until ``heard`` holds a message on it; whether it did in time."""
    deadline = asyncio.get_running_loop().time() + within
    while not any(msg.subject == subject for msg in heard):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await nc.publish(subject, b"news")
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
def locked_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server with compose's deploy/nats/nats.conf; only port and store are ours."""
    env = dict(os.environ)
    env.update({PASSWORD_VARIABLES[user]: password for user, password in PASSWORDS.items()})
    server = NatsServer(tmp_path / "nats", config=CONFIG, env=env).start()
    yield server
    server.stop()


@pytest.fixture
async def login(locked_nats: NatsServer) -> AsyncIterator:
    """A factory: ``await login("story")`` is a client of that user, closed after the test."""
    logins: list[Login] = []

    async def make(user: str) -> Login:
        refusals: list[str] = []

        async def heard(err: Exception) -> None:
            refusals.append(str(err).lower())

        nc = await nats.connect(
            locked_nats.url,
            user=user,
            password=PASSWORDS[user],
            inbox_prefix=connection.Credentials(user=user).inbox_prefix,
            error_cb=heard,
            allow_reconnect=False,
        )
        logins.append(Login(user, nc, refusals))
        return logins[-1]

    yield make
    for each in logins:
        await each.nc.close()


async def test_the_config_refuses_to_start_without_the_passwords(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSTORY_NATS_")}
    server = NatsServer(tmp_path / "nats", config=CONFIG, env=env)
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()


async def test_a_client_without_the_right_password_is_refused(locked_nats: NatsServer) -> None:
    for user, password in [(None, None), ("story", "guess"), ("root", "root")]:
        with pytest.raises(NatsError):
            await nats.connect(
                locked_nats.url,
                user=user,
                password=password,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )


@pytest.mark.parametrize("user", list(NOT_YOURS))
async def test_a_user_cannot_subscribe_to_what_is_not_its_own(login, user: str) -> None:
    gateway, probe = await login("gateway"), await login(user)
    heard: list[Msg] = []
    for subject in NOT_YOURS[user]:
        assert await probe.subscribe_refused(subject, heard), subject
    # Nothing reaches the refused subscriptions.
    for subject in ENDPOINTS.values():
        await gateway.nc.publish(subject, b"secret request")
    await gateway.nc.flush()
    await asyncio.sleep(0.2)
    assert heard == []


@pytest.mark.parametrize("user", ["frames", "story", "translation"])
async def test_a_service_subscribes_to_its_own_endpoint_discovery_and_cancels(
    login, user: str
) -> None:
    # The same check that refuses the subjects above lets these through, and they deliver.
    spec = {"frames": FRAMES, "story": STORY, "translation": TRANSLATION}[user]
    gateway, service = await login("gateway"), await login(user)
    heard: list[Msg] = []

    async def hear(msg: Msg) -> None:
        heard.append(msg)
        if msg.reply:
            await msg.respond(b"answer")  # allow_responses: the caller's inbox, once

    subjects = [ENDPOINTS[user], cancel_subject("r1"), ping_subject(spec)]
    for subject in subjects:
        await service.nc.subscribe(subject, cb=hear)
    answer = await _request_soon(gateway.nc, ENDPOINTS[user])
    assert answer.data == b"answer"
    assert (await _request_soon(gateway.nc, ping_subject(spec))).data == b"answer"
    assert await _delivered(gateway.nc, cancel_subject("r1"), heard)
    assert {msg.subject for msg in heard} == set(subjects)
    # News goes one way: services publish progress, the gateway reads it.
    news: list[Msg] = []
    await gateway.nc.subscribe(progress_subject("r1"), cb=partial(_keep, news))
    assert await _delivered(service.nc, progress_subject("r1"), news)
    assert not service.refusals and not gateway.refusals


async def test_a_service_cannot_publish_to_a_peer_or_answer_what_it_was_not_asked(login) -> None:
    story = await login("story")
    for subject in [
        TRANSLATE.subject,
        EXTRACT_FRAMES.subject,
        cancel_subject("r1"),
        info_subject(STORY),
        "_INBOX.gateway.forged-reply",
    ]:
        await story.nc.publish(subject, b"forged")
        await story.nc.flush()
        assert await story.refused("publish", subject), subject


async def test_the_bucket_gives_each_process_what_it_needs_and_no_more(login) -> None:
    gateway, frames, story, translation = [
        await login(user) for user in ("gateway", "frames", "story", "translation")
    ]
    upload = blobs.upload_name("r1", 0)
    frame = blobs.frame_name(upload, 0)
    # Big enough for several chunks and JetStream's flow control on the way out.
    video = os.urandom(3 * 1024 * 1024)

    # A read refused flow control would stall for ever: give up in time instead.
    async with asyncio.timeout(15):
        # The gateway makes the bucket and stores the upload.
        owned = await gateway.bucket()
        await blobs.put_bytes(owned, upload, video)

        # The frame service reads the upload, writes a frame (and may remove its frames).
        frame_store = await frames.bucket()
        assert await blobs.fetch_bytes(frame_store, upload) == video
        await blobs.put_bytes(frame_store, frame, b"jpeg")
        await blobs.put_bytes(frame_store, frame + "-spare", b"jpeg")
        await blobs.delete_quietly(frame_store, [frame + "-spare"])

        # The story service reads the frame.
        story_store = await story.bucket()
        assert await blobs.fetch_bytes(story_store, frame) == b"jpeg"
    assert not gateway.refusals and not frames.refusals and not story.refusals

    # But the story service can neither write nor delete.
    with pytest.raises(TimeoutError):
        await story_store.put(frame + "-forged", b"forged")
    assert await story.refused("publish", "$O.imgstory-blobs.C.")
    with pytest.raises(TimeoutError):
        await story_store.delete(upload)
    assert await story.refused("publish", "$O.imgstory-blobs.M.")
    assert await story.refused("publish", f"$JS.API.STREAM.PURGE.{STREAM}")

    # The translation service cannot even see the bucket.
    with pytest.raises(TimeoutError):
        await translation.bucket()
    assert await translation.refused("publish", f"$JS.API.STREAM.INFO.{STREAM}")
    for subject in [f"$JS.API.STREAM.MSG.GET.{STREAM}", f"$JS.API.CONSUMER.CREATE.{STREAM}"]:
        assert await translation.publish_refused(subject)

    # Nobody deletes or reconfigures the bucket's stream, or makes another stream; only
    # the writers may purge (deleting an object purges its chunks).
    for each, may_purge in ((gateway, True), (frames, True), (story, False), (translation, False)):
        refusable = [f"$JS.API.STREAM.DELETE.{STREAM}", f"$JS.API.STREAM.UPDATE.{STREAM}"]
        refusable += ["$JS.API.STREAM.CREATE.SNOOP", "$JS.API.STREAM.DELETE.OTHER"]
        refusable += [] if may_purge else [f"$JS.API.STREAM.PURGE.{STREAM}"]
        for subject in refusable:
            assert await each.publish_refused(subject), (each.user, subject)

    # All of it was refused: the stream is as the gateway made it, and holds what the
    # gateway and frames stored, intact.
    info = await gateway.nc.jetstream().stream_info(STREAM)
    assert info.config.subjects == [f"$O.{BLOB_BUCKET}.C.>", f"$O.{BLOB_BUCKET}.M.>"]
    names = await gateway.nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=2)
    assert json.loads(names.data)["streams"] == [STREAM]
    assert sorted(await blobs.list_names(owned)) == [upload, frame]
    assert await blobs.fetch_bytes(owned, upload) == video
    # And the gateway removes everything a request stored.
    await blobs.delete_quietly(owned, [upload, frame])
    assert await blobs.list_names(owned) == []


async def test_the_pipeline_runs_with_each_process_on_its_own_user(
    locked_nats: NatsServer,
    openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = locked_nats.url
    model = fake_model_settings(openai, "fake")
    frames_settings = replace(
        frame_config.load({}), nats_url=url, perception=False, ocr=False, transcribe=False
    )
    starts = {
        "frames": lambda c: start_frames(c, frames_settings),
        "story": lambda c: start_story(
            c, replace(story_config.load({}), model=replace(model, model="fake-story"))
        ),
        "translation": lambda c: start_translation(
            c, replace(translation_config.load({}), model=replace(model, model="fake-translate"))
        ),
    }
    clients: list[Client] = []
    servers: list[Server] = []
    # The gateway reads its login from the environment, as every `python -m` process does.
    monkeypatch.setenv("NATS_USER", "gateway")
    monkeypatch.setenv("NATS_PASSWORD", PASSWORDS["gateway"])
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    settings = replace(gateway_config.load({}), nats_url=url, upload_dir=str(upload_dir))
    try:
        for user, start in starts.items():
            login = connection.Credentials(user=user, password=PASSWORDS[user])
            clients.append(await connection.connect(url, f"test-{user}", login))
            servers.append(await start(clients[-1]))
        async with gateway_client(settings) as client:
            photo = sample_photo("chelsea.png")
            response = await client.post(
                "/analyze/", files=[("files", (photo.name, photo.read_bytes(), "image/png"))]
            )
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
            # A durable job too: submitted, followed, replayed, deleted under these logins.
            form = [("files", (photo.name, photo.read_bytes(), "image/png"))]
            job = (await client.post("/jobs", files=form)).json()
            for _ in range(200):
                if (await client.get(job["urls"]["self"])).json()["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
            replay = await client.get(job["urls"]["events"])
            late_cancel = await client.post(job["urls"]["cancel"])
            deleted = await client.delete(job["urls"]["self"])
        assert "event: result" in replay.text and late_cancel.status_code == 409
        assert deleted.status_code == 204
        assert response.status_code == 200, response.text
        # /metrics reached every service's $SRV.STATS under the gateway's login.
        for service in ("imgstory-frames", "imgstory-story", "imgstory-translation"):
            assert f'imgstory_service_replicas{{service="{service}"}} 1.0' in metrics
        assert "1 picture" in response.json()["english"]
        assert ready.status_code == 200, ready.text
        # Whatever the processes did, the server refused none of it.
        assert "permissions violation" not in caplog.text
        # The request's objects were removed by the gateway.
        admin = connection.Credentials(user="gateway", password=PASSWORDS["gateway"])
        checker = await connection.connect(url, "test-check", admin)
        clients.append(checker)
        store = await blobs.open_bucket(blobs.jetstream(checker))
        for _ in range(50):
            if not await blobs.list_names(store):
                break
            await asyncio.sleep(0.1)
        assert await blobs.list_names(store) == []
    finally:
        for server in servers:
            await server.stop()
        for client_nc in clients:
            await client_nc.close()


def test_credentials_come_from_the_environment_and_name_the_inboxes() -> None:
    assert connection.credentials(Env({})) == connection.Credentials()
    assert connection.Credentials().inbox_prefix == "_INBOX"
    login = connection.credentials(
        Env({"NATS_USER": "story", "NATS_PASSWORD": "pw", "NATS_TLS_CA": "/ca.pem"})
    )
    assert login == connection.Credentials(user="story", password="pw", tls_ca="/ca.pem")
    assert login.inbox_prefix == "_INBOX.story"
    with pytest.raises(SettingsError, match="together"):
        connection.credentials(Env({"NATS_USER": "story"}))
    with pytest.raises(SettingsError, match="NATS_USER"):
        connection.credentials(Env({"NATS_USER": "story.>", "NATS_PASSWORD": "pw"}))


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *curve, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=ca"],
        ["req", *curve, "-keyout", key, "-out", request, "-subj", "/CN=nats"],
        [
            *("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"),
            *("-out", cert, "-days", "1", "-extfile", folder / "san.cnf"),
        ],
    ):
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


async def test_with_tls_on_a_process_connects_through_nats_tls_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = _certificates(tmp_path)
    env = dict(os.environ)
    env.update({PASSWORD_VARIABLES[user]: password for user, password in PASSWORDS.items()})
    # TLS switched on as docs/operating.md says: the server's certificate and key.
    tls = ("--tlscert", str(cert), "--tlskey", str(key))
    server = NatsServer(tmp_path / "nats", config=CONFIG, env=env, args=tls).start()
    try:
        monkeypatch.setenv("NATS_USER", "translation")
        monkeypatch.setenv("NATS_PASSWORD", PASSWORDS["translation"])
        monkeypatch.setenv("NATS_TLS_CA", str(ca))
        nc = await connection.connect(server.url, "test-tls")
        try:
            assert nc.is_connected and nc._server_info["tls_required"]
        finally:
            await nc.close()
        # Without TLS, or trusting another CA, there is no connection.
        with pytest.raises((NatsError, OSError)):
            await nats.connect(
                server.url,
                user="translation",
                password=PASSWORDS["translation"],
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )
        with pytest.raises((NatsError, OSError)):
            await nats.connect(
                server.url,
                user="translation",
                password=PASSWORDS["translation"],
                tls=ssl.create_default_context(),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )
    finally:
        server.stop()


async def test_the_same_processes_run_on_their_own_users_from_the_environment(
    locked_nats: NatsServer, openai: FakeOpenAI, tmp_path: Path
) -> None:
    # As compose runs them: one image, NATS_USER and NATS_PASSWORD differing per service.
    port = free_port()
    users = {
        "frame_service": "frames",
        "story_service": "story",
        "translation_service": "translation",
        "gateway": "gateway",
    }
    processes = []
    for module, user in users.items():
        env = service_env(
            locked_nats.url,
            openai,
            NATS_USER=user,
            NATS_PASSWORD=PASSWORDS[user],
            IMGSTORY_PORT=str(port),
            IMGSTORY_TRANSCRIBE="0",
            IMGSTORY_PERCEPTION="0",
            IMGSTORY_UPLOAD_DIR=str(tmp_path),
        )
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
            )
        )
    # Read the logs as they come, so that no process blocks on a full pipe.
    logs = [asyncio.ensure_future(p.stderr.read()) for p in processes if p.stderr is not None]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                assert all(p.returncode is None for p in processes), "a process exited"
                assert asyncio.get_running_loop().time() < deadline, "not ready within 60 s"
                await asyncio.sleep(0.2)
            photo = sample_photo("rocket.jpg")
            response = await client.post(
                "/analyze/", files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))]
            )
        assert response.status_code == 200, response.text
        assert "1 picture" in response.json()["english"]
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.wait(), 20)
    said = b"".join(await asyncio.gather(*logs)).lower()
    assert b"permissions violation" not in said
