"""The RPC layer on a real NATS server: typed results, failures raised, wire tags pinned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import rpc
from bus.channel import RequestChannel
from bus.reporter import Reporter
from bus.server import Server
from contracts import messages as m
from contracts.subjects import TRANSLATION, Endpoint, progress_subject

ECHO = Endpoint(TRANSLATION, "echo", "imgstory.test.echo", m.Translate, m.Translated)


class Throttled(Exception):
    retry_after = 7.5


class Refused(Exception):
    pass


async def echo(request: m.Translate) -> m.Translated:
    if request.text == "throttle":
        raise Throttled("slow down, please")
    if request.text == "refuse":
        raise Refused("no such thing")
    if request.text == "crash":
        raise RuntimeError("/srv/secret/path exploded: <object at 0x7f>")
    return m.Translated(text=request.text.upper(), usage=m.Usage(input_tokens=3), model="echo")


@pytest.fixture
async def echo_server(empty_nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(empty_nats_url)
    server = await Server.start(client, TRANSLATION)
    errors = {Throttled: m.FailureCode.RATE_LIMITED, Refused: m.FailureCode.UNPROCESSABLE}
    await server.add(ECHO, echo, errors=errors, max_in_flight=4)
    caller = await nats.connect(empty_nats_url)
    yield caller
    await server.stop()
    await caller.close()
    await client.close()


async def test_call_returns_the_typed_result(echo_server) -> None:
    reply = await rpc.call(echo_server, ECHO, m.Translate(request_id="r1", text="hi"), timeout=5)
    assert isinstance(reply, m.Translated)
    assert reply.text == "HI" and reply.usage.input_tokens == 3


async def test_a_mapped_error_is_raised_as_remote_failure_with_its_code(echo_server) -> None:
    with pytest.raises(rpc.RemoteFailure) as caught:
        await rpc.call(echo_server, ECHO, m.Translate(request_id="r2", text="throttle"), timeout=5)
    failure = caught.value.failure
    assert failure.code is m.FailureCode.RATE_LIMITED and failure.code.status == 429
    assert failure.detail == "slow down, please" and failure.retry_after == 7.5

    with pytest.raises(rpc.RemoteFailure) as caught:
        await rpc.call(echo_server, ECHO, m.Translate(request_id="r3", text="refuse"), timeout=5)
    assert caught.value.failure.code is m.FailureCode.UNPROCESSABLE


async def test_an_unexpected_error_is_internal_and_keeps_its_text_private(echo_server) -> None:
    with pytest.raises(rpc.RemoteFailure) as caught:
        await rpc.call(echo_server, ECHO, m.Translate(request_id="r4", text="crash"), timeout=5)
    failure = caught.value.failure
    assert failure.code is m.FailureCode.INTERNAL
    assert "secret" not in failure.detail and "0x7f" not in failure.detail
    # The replica keeps serving after a handler blew up.
    reply = await rpc.call(echo_server, ECHO, m.Translate(request_id="r5", text="ok"), timeout=5)
    assert reply.text == "OK"


async def test_calling_a_service_nobody_runs_fails_at_once(empty_nats_url: str) -> None:
    client = await nats.connect(empty_nats_url)
    try:
        started = time.monotonic()
        with pytest.raises(rpc.ServiceNotRunning, match="translation service is not running"):
            await rpc.call(client, ECHO, m.Translate(request_id="r6", text="x"), timeout=30)
        assert time.monotonic() - started < 5
    finally:
        await client.close()


async def test_a_request_of_the_wrong_type_is_refused_before_sending(echo_server) -> None:
    with pytest.raises(TypeError, match="takes Translate"):
        await rpc.call(echo_server, ECHO, m.WriteStory(request_id="r7", frames=[]), timeout=5)  # type: ignore[misc]  # the wrong request type is the point


async def test_a_slow_service_is_a_timeout(echo_server, empty_nats_url: str) -> None:
    slow = Endpoint(TRANSLATION, "slow", "imgstory.test.slow", m.Translate, m.Translated)
    client = await nats.connect(empty_nats_url)
    server = await Server.start(client, TRANSLATION)

    release = asyncio.Event()

    async def late(request: m.Translate) -> m.Translated:
        await release.wait()
        return m.Translated(text="late", usage=m.Usage(), model="echo")

    await server.add(slow, late)
    try:
        with pytest.raises(rpc.ServiceTimedOut, match=r"did not answer within 0\.3 s"):
            await rpc.call(echo_server, slow, m.Translate(request_id="r8", text="x"), timeout=0.3)
    finally:
        release.set()
        await server.stop()
        await client.close()


async def test_calls_of_one_request_to_one_endpoint_are_watched_apart(
    echo_server, empty_nats_url: str
) -> None:
    """A translation per paragraph: several calls of one request at once. The first to
    finish must not take the others' heartbeat watch with it (they were sent again)."""
    paced = Endpoint(TRANSLATION, "paced", "imgstory.test.paced", m.Translate, m.Translated)
    client = await nats.connect(empty_nats_url)
    server = await Server.start(client, TRANSLATION)
    served: list[str] = []

    async def paced_echo(request: m.Translate) -> m.Translated:
        served.append(request.text)
        await asyncio.sleep(float(request.text))
        return m.Translated(text=request.text, usage=m.Usage(), model="echo")

    await server.add(paced, paced_echo, max_in_flight=4)
    try:
        async with RequestChannel(echo_server, "r9") as channel:
            # Replicas beat every second: a 1.5 s window holds one beat with room to spare.
            liveness = channel.liveness(window=1.5, attempts=3)
            replies = await asyncio.gather(
                *(
                    rpc.call(
                        echo_server,
                        paced,
                        m.Translate(request_id="r9", text=seconds),
                        timeout=30,
                        liveness=liveness,
                    )
                    for seconds in ("0.1", "3.5")
                )
            )
    finally:
        await server.stop()
        await client.close()

    assert [reply.text for reply in replies] == ["0.1", "3.5"]
    assert sorted(served) == ["0.1", "3.5"]  # each sent once: none was taken for silent


async def test_a_request_channel_hands_each_kind_of_news_to_whoever_registered(
    echo_server, empty_nats_url: str
) -> None:
    """A service's progress and paragraphs, and the caller's own stages, reach the
    listeners registered on the request's channel; a malformed message is skipped, and
    nothing arrives once the channel is left."""
    service = await nats.connect(empty_nats_url)
    progress: list[m.Progress] = []
    paragraphs: list[tuple[int, str]] = []
    channel = RequestChannel(echo_server, "r10")
    assert channel.news_subject() is None  # nobody listens yet: services publish nothing
    channel.on_progress(progress.append)
    channel.on_paragraph(lambda index, text: paragraphs.append((index, text)))
    assert channel.news_subject() == progress_subject("r10")
    try:
        async with channel:
            await echo_server.flush()  # subscribed before anything is published
            reporter = Reporter(service, channel.news_subject(), "r10")
            await service.publish(channel.subject, b"not news at all")
            await reporter.stage(m.Stage.WRITING_STORY, "Writing")
            await asyncio.to_thread(reporter.paragraph_from_thread, 0, "The Quiet Harbour")
            channel.stage(m.Stage.UPLOADING, "Storing your files")
            await _until(lambda: len(progress) == 2 and len(paragraphs) == 1)
        left: list[Msg] = []
        after = await echo_server.subscribe(channel.subject, cb=_keep(left))
        await echo_server.flush()
        await reporter.stage(m.Stage.TRANSLATING, "Translating")
        await _until(lambda: len(left) == 1)
        await after.unsubscribe()
    finally:
        await service.close()

    assert sorted((p.stage, p.detail) for p in progress) == [
        (m.Stage.UPLOADING, "Storing your files"),
        (m.Stage.WRITING_STORY, "Writing"),
    ]
    assert paragraphs == [(0, "The Quiet Harbour")]


def _keep(into: list[Msg]) -> Callable[[Msg], Awaitable[None]]:
    async def keep(msg: Msg) -> None:
        into.append(msg)

    return keep


async def _until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


# The wire tags (1.0.0 unless marked). A class may be renamed; its tag may not change.
WIRE_TAGS: dict[type[m.Message], str] = {
    m.Failure: "Failure",
    m.ExtractFrames: "ExtractFrames",
    m.FramesExtracted: "FramesExtracted",
    m.WriteStory: "WriteStory",
    m.StoryWritten: "StoryWritten",
    m.Translate: "Translate",
    m.Translated: "Translated",
    m.Progress: "Progress",
    m.Alive: "Alive",
    m.Cancel: "Cancel",
    m.Paragraph: "Paragraph",  # 1.1.0
    # Durable jobs: stored in JetStream (a KV entry, work, webhook and event messages).
    m.JobRecord: "JobRecord",
    m.RunJob: "RunJob",
    m.DeliverWebhook: "DeliverWebhook",
    m.JobEvent: "JobEvent",
}
ABSTRACT = {m.StageRequest}  # fields every stage request shares; never sent on its own


def test_every_message_states_its_wire_tag_explicitly() -> None:
    def subclasses(cls: type) -> set[type]:
        found: set[type] = set(cls.__subclasses__())
        return found.union(*(subclasses(c) for c in found))

    assert subclasses(m.Message) - ABSTRACT == set(WIRE_TAGS)
    for cls, tag in WIRE_TAGS.items():
        assert cls.__struct_config__.tag == tag, cls
        assert cls.__struct_config__.tag_field == "type", cls


def test_a_reply_from_a_newer_replica_with_unknown_fields_still_decodes() -> None:
    newer = {
        "type": "Translated",
        "text": "สวัสดี",
        "usage": {"input_tokens": 1, "output_tokens": 2, "cached_tokens": 9},
        "model": "m",
        "warnings": ["a field this version does not know"],
    }
    reply = ECHO.decode_reply(msgspec.msgpack.encode(newer))
    assert isinstance(reply, m.Translated) and reply.usage.output_tokens == 2
    failure = ECHO.decode_reply(
        msgspec.msgpack.encode({"type": "Failure", "code": "internal", "detail": "x"})
    )
    assert isinstance(failure, m.Failure)
