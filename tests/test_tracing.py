"""Traces: one trace per request through gateway, NATS, services and model calls; off unless asked.

The in-process tests send spans to an in-memory exporter through ``tracing.activate``
(OpenTelemetry's own global provider can be set once a process, and stays unset here).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bus import connection, rpc, tracing
from bus.liveness import Heartbeats, Liveness
from bus.logs import REQUEST_ID, REQUEST_ID_HEADER
from bus.settings import Env, SettingsError
from contracts.messages import Translate, Translated, Usage
from contracts.subjects import EXTRACT_FRAMES, TRANSLATE, WRITE_STORY, Endpoint, ServiceSpec
from devstack.fake_answers import Status, count_prompt_tokens
from devstack.processes import ROOT, service_env
from llm.errors import RateLimited
from llm.openai_chat import OpenAIChat
from tests.media import sample_photo
from tests.test_processes import wait_for_ping

STAGE_SUBJECTS = (EXTRACT_FRAMES.subject, WRITE_STORY.subject, TRANSLATE.subject)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every span kept in memory as it ends; off again after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.activate(provider)
    try:
        yield exporter
    finally:
        tracing.activate(None)
        provider.shutdown()


def photo_form(name: str = "chelsea.png") -> list[tuple[str, tuple[str, bytes, str]]]:
    path: Path = sample_photo(name)
    return [("files", (path.name, path.read_bytes(), "application/octet-stream"))]


async def closed_tree(exporter: InMemorySpanExporter, timeout: float = 5) -> list[ReadableSpan]:
    """The finished spans once every one's parent has ended too (a service's span ends just
    after its reply reaches the gateway)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = list(exporter.get_finished_spans())
        ended = {s.context.span_id for s in spans}
        if all(s.parent is None or s.parent.span_id in ended for s in spans):
            return spans
        if time.monotonic() > deadline:
            pytest.fail(f"spans whose parent never ended: {[s.name for s in spans]}")
        await asyncio.sleep(0.02)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    return next(s for s in spans if s.context.span_id == span.parent.span_id)


def test_without_an_endpoint_nothing_is_installed_and_spans_record_nothing() -> None:
    assert tracing.setup("imgstory-gateway", Env({})) is None
    assert not tracing.active()
    # OpenTelemetry's global is still the API's proxy: no SDK provider anywhere.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracing.span("anything") as span:
        assert not span.is_recording()
    assert tracing.with_context({REQUEST_ID_HEADER: "r1"}) == {REQUEST_ID_HEADER: "r1"}


def test_the_endpoint_names_the_service_and_where_its_spans_go() -> None:
    env = Env({tracing.ENDPOINT: "http://collector:4318/"})
    assert tracing.endpoint(env) == "http://collector:4318/v1/traces"
    traces_only = {tracing.TRACES_ENDPOINT: "https://collector/otlp/traces"}
    assert tracing.endpoint(Env(traces_only)) == "https://collector/otlp/traces"
    provider = tracing.build_provider("imgstory-story", env)
    assert provider is not None
    try:
        assert provider.resource.attributes[SERVICE_NAME] == "imgstory-story"
    finally:
        provider.shutdown()  # nothing was recorded, so nothing is sent
    with pytest.raises(SettingsError, match=tracing.ENDPOINT):
        tracing.endpoint(Env({tracing.ENDPOINT: "collector:4318"}))


@pytest.mark.usefixtures("blob_store")
async def test_off_by_default_a_request_carries_its_id_but_no_trace_context(gateway, openai, nc):
    heard: list[Msg] = []

    async def listen(msg: Msg) -> None:
        heard.append(msg)

    # Plain subscribers beside the services' queue groups get a copy of every call.
    listeners = [await nc.subscribe(subject, cb=listen) for subject in STAGE_SUBJECTS]
    try:
        async with gateway() as client:
            response = await client.post("/analyze/", files=photo_form())
        assert response.status_code == 200, response.text
    finally:
        for listener in listeners:
            await listener.unsubscribe()
    assert {msg.subject for msg in heard} == set(STAGE_SUBJECTS)
    for msg in heard:
        assert msg.headers == {REQUEST_ID_HEADER: response.json()["request_id"]}


@pytest.mark.usefixtures("blob_store")
async def test_one_request_is_one_trace_through_every_service_and_model_call(
    gateway, openai, spans
):
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=photo_form(), headers={"X-Request-ID": "traced-1"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    finished = await closed_tree(spans)

    # One trace, one root: the gateway's HTTP span.
    assert {s.context.trace_id for s in finished} == {finished[0].context.trace_id}
    [root] = [s for s in finished if s.parent is None]
    # Named by the route's template, which Litestar spells without the trailing slash.
    assert root.name == "POST /analyze" and root.kind is SpanKind.SERVER
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["http.route"] == "/analyze"
    assert root.attributes[tracing.REQUEST_ID] == body["request_id"] == "traced-1"

    # Under it a span per stage call; the story's three paragraphs take two translation
    # calls (the title goes with the first paragraph), and its alt text one more.
    stages = [s for s in finished if s.parent and s.parent.span_id == root.context.span_id]
    assert sorted(s.name for s in stages) == ["frames", "story", *["translation"] * 3]

    # Each stage call sent once; the service's span is that send's child, through NATS.
    for stage, subject in (
        ("frames", EXTRACT_FRAMES.subject),
        ("story", WRITE_STORY.subject),
        ("translation", TRANSLATE.subject),
    ):
        sends = named(finished, f"send {subject}")
        served = named(finished, f"process {subject}")
        assert len(sends) == len(served) == len(named(stages, stage))
        for send in sends:
            assert send.kind is SpanKind.CLIENT
            assert parent_of(send, finished).name == stage
        for serve in served:
            assert serve.kind is SpanKind.SERVER
            assert serve.parent is not None and serve.parent.is_remote
            assert parent_of(serve, finished) in sends
            assert serve.attributes is not None
            assert serve.attributes[tracing.REQUEST_ID] == "traced-1"
            assert serve.status.status_code is StatusCode.UNSET

    # Every model call the fake answered is a client span inside the service that made it.
    story_calls = named(finished, "chat fake-story")
    translate_calls = named(finished, "chat fake-translate")
    assert len(story_calls) + len(translate_calls) == len(openai.requests)
    assert len(story_calls) == 1 and len(translate_calls) == 3  # the alt text is one
    for call in story_calls:
        assert parent_of(call, finished).name == f"process {WRITE_STORY.subject}"
    for call in translate_calls:
        assert parent_of(call, finished).name == f"process {TRANSLATE.subject}"
    [story] = story_calls
    assert story.kind is SpanKind.CLIENT and story.attributes is not None
    assert story.attributes["gen_ai.operation.name"] == "chat"
    assert story.attributes["gen_ai.request.model"] == "fake-story"
    assert story.attributes["gen_ai.usage.input_tokens"] == count_prompt_tokens(
        openai.requests[0].messages
    )
    calls = story_calls + translate_calls
    used = body["token_usage"]
    assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls) == used["input_tokens"]  # type: ignore[index, misc]  # attributes checked above
    assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in calls) == used["output_tokens"]  # type: ignore[index, misc]  # attributes checked above


async def test_each_send_of_a_call_is_a_client_span_whose_context_it_carries(nc, spans):
    """A replica that goes silent is given up on and the call sent again: two sends, two
    spans, each message carrying its own span's context beside the request id."""
    subject = f"imgstory.test.tracing.{uuid.uuid4().hex}"
    spec = ServiceSpec("imgstory-test", "1.0.0", "a silent replica, then an answer")
    endpoint = Endpoint(spec, "translate", subject, Translate, Translated)
    heard: list[Msg] = []

    async def replica(msg: Msg) -> None:
        heard.append(msg)
        if len(heard) > 1:  # the first send is never answered, nor beaten for
            reply = Translated(text="สวัสดี", usage=Usage(), model="m")
            await msg.respond(msgspec.msgpack.encode(reply))

    subscription = await nc.subscribe(subject, cb=replica)
    liveness = Liveness(Heartbeats(f"{subject}.beats"), window=0.2, attempts=3)
    token = REQUEST_ID.set("resent-1")
    try:
        with tracing.span("caller") as caller:
            request = Translate(request_id="resent-1-abcd", text="hello")
            await rpc.call(nc, endpoint, request, timeout=5, liveness=liveness)
    finally:
        REQUEST_ID.reset(token)
        await subscription.unsubscribe()

    sends = sorted(
        named(spans.get_finished_spans(), f"send {subject}"), key=lambda s: s.start_time or 0
    )
    assert len(sends) == len(heard) == 2
    caller_id = caller.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == caller_id for s in sends)
    given_up, answered = sends
    assert given_up.attributes is not None and given_up.attributes["imgstory.cancelled"] is True
    assert given_up.status.status_code is StatusCode.ERROR
    assert answered.status.status_code is StatusCode.UNSET
    for msg, send in zip(heard, sends, strict=True):
        assert msg.headers is not None
        assert msg.headers[REQUEST_ID_HEADER] == "resent-1"
        _, trace_id, span_id, _ = msg.headers["traceparent"].split("-")
        assert int(trace_id, 16) == caller.get_span_context().trace_id
        assert int(span_id, 16) == send.context.span_id


async def test_a_failed_model_call_is_an_error_span_naming_the_error(fake, make_client, spans):
    fake.script(Status(429, {"retry-after": "7"}))
    with pytest.raises(RateLimited):
        await OpenAIChat(make_client(), "gpt-test").complete(
            [{"role": "user", "content": "hello"}], max_tokens=10, temperature=0.0
        )
    [call] = spans.get_finished_spans()
    assert call.name == "chat gpt-test" and call.kind is SpanKind.CLIENT
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "RateLimited"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert [event.name for event in call.events] == ["exception"]


class Collector:
    """An OTLP/HTTP trace receiver on loopback: keeps what each export request carried."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == tracing.TRACES_PATH:
                    collector.exports.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads what arrived, not a line per export

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, Span]]:
        """Every span received, with the service.name of the process that sent it."""
        found = []
        for export in self.exports:
            for resource_spans in export.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    found += [(attributes[SERVICE_NAME], s) for s in scope_spans.spans]
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_service_process_sends_its_spans_over_otlp_as_itself_and_flushes_at_exit(
    empty_nats_url, openai, spans
):
    """The real set-up: OTEL_EXPORTER_OTLP_ENDPOINT in a service's environment, a batch
    exporter whose last spans leave when the process stops, named by its service."""
    collector = Collector()
    env = service_env(empty_nats_url, openai, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "translation_service", cwd=ROOT, env=env
    )
    nc = await connection.connect(empty_nats_url, "test-tracing")
    try:
        await wait_for_ping(empty_nats_url, "imgstory-translation")
        with tracing.span("caller"):
            request = Translate(request_id="exported-1", text="The sea was calm.")
            await rpc.call(nc, TRANSLATE, request, timeout=20)
    finally:
        await nc.close()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 20)
        collector.close()
    assert code == 0
    [send] = named(spans.get_finished_spans(), f"send {TRANSLATE.subject}")
    received = collector.spans()
    assert {service for service, _ in received} == {"imgstory-translation"}
    by_name = {span.name: span for _, span in received}
    served = by_name[f"process {TRANSLATE.subject}"]
    assert served.trace_id == send.context.trace_id.to_bytes(16, "big")
    assert served.parent_span_id == send.context.span_id.to_bytes(8, "big")
    chat = next(span for name, span in by_name.items() if name.startswith("chat "))
    assert chat.parent_span_id == served.span_id
