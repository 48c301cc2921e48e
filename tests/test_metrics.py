"""GET /metrics: the figures move as requests are served (real gateway, services and NATS)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devstack.fake_answers import Status
from devstack.gateway import gateway_client
from devstack.nats_server import NatsServer
from devstack.processes import free_port
from gateway import config as gateway_config
from gateway.metrics import REJECTION_KEY, STAGES, Metrics, MetricsMiddleware
from tests.media import sample_photo

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PHOTO = sample_photo("chelsea.png")


def photo_upload() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (PHOTO.name, PHOTO.read_bytes(), "image/png"))]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def service_requests(samples: Samples, service: str, endpoint: str) -> float:
    """A service endpoint's requests, summed over its replicas."""
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "imgstory_service_requests_total"
        and ("service", service) in labels
        and ("endpoint", endpoint) in labels
    )


async def test_one_analysis_moves_requests_stages_tokens_and_service_figures(gateway, openai):
    async with gateway() as client:
        before = await scrape(client)
        response = await client.post("/analyze/", files=photo_upload())
        after = await scrape(client)
    assert response.status_code == 200, response.text
    body = response.json()

    # One series for the route, whichever spelling (/analyze/ or /analyze) the client used.
    assert moved(before, after, "imgstory_requests_total", route="/analyze", status="200") == 1
    assert value(after, "imgstory_requests_in_flight", route="/analyze") == 0
    assert value(after, "imgstory_requests_in_flight", route="/metrics") == 1  # the scrape
    assert moved(before, after, "imgstory_upload_bytes_count") == 1
    assert moved(before, after, "imgstory_upload_bytes_sum") > PHOTO.stat().st_size

    for stage in STAGES:
        assert moved(before, after, "imgstory_stage_seconds_count", stage=stage) == 1
        seconds = moved(before, after, "imgstory_stage_seconds_sum", stage=stage)
        assert seconds == pytest.approx(body["timings_ms"][stage] / 1000, abs=0.001)
        assert moved(before, after, "imgstory_stage_seconds_bucket", stage=stage, le="+Inf") == 1

    for stage in ("story", "translation"):
        for kind in ("input", "output"):
            tokens = value(
                after, "imgstory_tokens_total", stage=stage, model=body["models"][stage], kind=kind
            )
            assert tokens == body["usage_by_stage"][stage][f"{kind}_tokens"] > 0

    # The services' own figures, from NATS micro: one frame extraction, one story, and a
    # translation call for each provider call after the story's.
    for service in ("imgstory-frames", "imgstory-story", "imgstory-translation"):
        assert value(after, "imgstory_service_replicas", service=service) >= 1
    frames = service_requests(after, "imgstory-frames", "extract")
    assert frames - service_requests(before, "imgstory-frames", "extract") == 1
    story = service_requests(after, "imgstory-story", "write")
    assert story - service_requests(before, "imgstory-story", "write") == 1
    translations = service_requests(after, "imgstory-translation", "translate")
    assert (
        translations - service_requests(before, "imgstory-translation", "translate")
        == len(openai.requests) - 1
    )
    story_seconds = service_total(after, "imgstory_service_processing_seconds_total", "write")
    assert story_seconds - service_total(
        before, "imgstory_service_processing_seconds_total", "write"
    ) == pytest.approx(body["timings_ms"]["story"] / 1000, abs=0.05)


async def test_a_failed_story_counts_as_the_story_services_error(gateway, openai):
    openai.script(Status(500), Status(500))
    async with gateway() as client:
        before = await scrape(client)
        response = await client.post("/analyze/", files=photo_upload())
        after = await scrape(client)
    assert response.status_code == 503
    errors = "imgstory_service_errors_total"
    assert service_total(after, errors, "write") - service_total(before, errors, "write") == 1
    assert service_total(after, errors, "extract") == service_total(before, errors, "extract")


def service_total(samples: Samples, name: str, endpoint: str) -> float:
    """One service figure of an endpoint, summed over its replicas."""
    return sum(
        count
        for (sample, labels), count in samples.items()
        if sample == name and ("endpoint", endpoint) in labels
    )


async def test_streamed_analysis_counts_once_when_the_stream_ends(gateway, openai):
    async with gateway() as client:
        before = await scrape(client)
        response = await client.post("/analyze/stream", files=photo_upload())
        after = await scrape(client)
    assert response.status_code == 200
    assert "event: result" in response.text
    assert (
        moved(before, after, "imgstory_requests_total", route="/analyze/stream", status="200") == 1
    )
    assert value(after, "imgstory_requests_in_flight", route="/analyze/stream") == 0
    assert moved(before, after, "imgstory_stage_seconds_count", stage="total") == 1


async def test_a_400_upload_counts_as_invalid_upload(gateway, openai):
    text = [("files", ("notes.txt", b"not a picture", "text/plain"))]
    async with gateway() as client:
        before = await scrape(client)
        plain = await client.post("/analyze/", files=text)
        streamed = await client.post("/analyze/stream", files=text)
        after = await scrape(client)
    assert plain.status_code == streamed.status_code == 400
    assert moved(before, after, "imgstory_rejections_total", reason="invalid_upload") == 2
    assert moved(before, after, "imgstory_requests_total", route="/analyze", status="400") == 1
    assert (
        moved(before, after, "imgstory_requests_total", route="/analyze/stream", status="400") == 1
    )
    # Nothing reached the pipeline, and every other reason is there at zero.
    assert moved(before, after, "imgstory_stage_seconds_count", stage="total") == 0
    assert value(after, "imgstory_rejections_total", reason="rate_limited") == 0
    assert openai.requests == []


async def test_metrics_answer_quickly_without_services_and_count_the_503(
    empty_nats_url, upload_dir
):
    settings = replace(gateway_config.load({}), nats_url=empty_nats_url, upload_dir=str(upload_dir))
    async with gateway_client(settings) as client:
        response = await client.post("/analyze/", files=photo_upload())
        started = time.monotonic()
        samples = await scrape(client)
        seconds = time.monotonic() - started
    assert response.status_code == 503
    assert value(samples, "imgstory_requests_total", route="/analyze", status="503") == 1
    assert value(samples, "imgstory_service_replicas", service="imgstory-story") == 0
    assert not any(name == "imgstory_service_requests_total" for name, _ in samples)
    assert seconds < 1.5


async def test_metrics_still_answer_while_nats_is_down(tmp_path: Path, upload_dir):
    bus = NatsServer(tmp_path / "nats", port=free_port()).start()
    try:
        settings = replace(gateway_config.load({}), nats_url=bus.url, upload_dir=str(upload_dir))
        async with gateway_client(settings) as client:
            bus.stop()
            started = time.monotonic()
            samples = await scrape(client)
            seconds = time.monotonic() - started
            bus.start()  # the gateway drains its connection on the way out: let it reconnect
            deadline = time.monotonic() + 15
            while not (await client.get("/readyz")).json()["nats"]:
                assert time.monotonic() < deadline, "the gateway did not reconnect"
                await asyncio.sleep(0.1)
    finally:
        bus.stop()
    assert value(samples, "imgstory_service_replicas", service="imgstory-frames") == 0
    assert value(samples, "imgstory_rejections_total", reason="invalid_upload") == 0
    assert seconds < 1.5


async def test_a_reason_the_limits_note_is_counted_as_a_rejection():
    """The API-key and limit middleware notes its reason in the scope's state."""

    def turning_away(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"][REJECTION_KEY] = "rate_limited"
            await send({"type": "http.response.start", "status": 429, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        return middleware

    @get("/analyze/", sync_to_thread=False)
    def handler() -> str:
        return "never"

    metrics = Metrics()
    app = Litestar(
        [handler],
        middleware=[DefineMiddleware(MetricsMiddleware, metrics=metrics), turning_away],
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/analyze/")
    assert response.status_code == 429
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "imgstory_rejections_total", reason="rate_limited") == 1
    assert value(samples, "imgstory_requests_total", route="/analyze", status="429") == 1
