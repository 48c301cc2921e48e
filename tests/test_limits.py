"""Limits at the gateway: a rate per key, caps on analyses in flight, a whole-request size cap
and a slow-upload timeout; each refusal is quick, says why, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest
from litestar.enums import ScopeType
from litestar.types import Receive, Scope, Send

from bus.settings import SettingsError
from devstack.fake_answers import Delay
from gateway import config as gateway_config
from gateway.app import create_app
from gateway.auth import ApiKeys
from gateway.errors import REJECTION_KEY
from gateway.limits import InFlight, SlidingWindow
from tests.media import sample_photo

pytestmark = pytest.mark.usefixtures("blob_store")

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789", "carol": "carol-key-012345"}
BOUNDARY = "imgstory-test-boundary"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_counts_exactly_and_says_when_a_slot_frees():
    clock = FakeClock()
    window = SlidingWindow(limit=3, window=60, clock=clock)
    for step in (0, 10, 20):
        clock.now = 1000 + step
        assert window.wait("alice") == 0
        window.take("alice")
    clock.now = 1030
    assert window.wait("alice") == pytest.approx(30)  # the first request leaves at 1060
    assert window.wait("bob") == 0  # other callers are unaffected
    clock.now = 1060
    assert window.wait("alice") == 0
    window.take("alice")
    assert window.wait("alice") == pytest.approx(10)  # now the one sent at 1010 is oldest
    clock.now = 1200
    assert window.wait("carol") == 0  # a quiet caller is forgotten
    assert "alice" not in window._times


def test_in_flight_caps_per_caller_and_overall_and_guesses_when_one_ends():
    clock = FakeClock()
    flights = InFlight(overall=3, per_caller=2, clock=clock)
    first = flights.enter("alice")
    clock.now += 4
    flights.enter("alice")
    assert flights.full("alice") == ("caller", 6.0)  # 10 s guessed, 4 s gone
    assert flights.full("bob") is None
    flights.enter("bob")
    assert flights.full("carol") == ("overall", 6.0)
    clock.now += 20
    flights.leave(first)  # it lasted 24 s: the guess moves towards it
    assert flights.full("carol") is None
    flights.enter("carol")
    assert flights.full("dave") == ("overall", 1.0)  # an overdue request: soon, but not 0


def files_of(name: str = "coffee.png") -> list[tuple[str, tuple[str, bytes, str]]]:
    path = sample_photo(name)
    return [("files", (path.name, path.read_bytes(), "image/png"))]


NOT_A_PICTURE = [("files", ("notes.jpg", b"just some text, not a picture", "image/jpeg"))]


def with_admission(settings: gateway_config.Settings, **values: object) -> gateway_config.Settings:
    return replace(settings, admission=replace(settings.admission, **values))  # type: ignore[arg-type]  # keyword values of Admission


def keyed(settings: gateway_config.Settings, **values: object) -> gateway_config.Settings:
    keys = ApiKeys.parse(KEYS.values())
    return with_admission(settings, api_keys=keys, **values)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@asynccontextmanager
async def served(settings: gateway_config.Settings) -> AsyncIterator[tuple[Callable, list]]:
    """The real app, and a factory of clients from a given address; also every request's
    rejection reason as the app left it in the ASGI scope (None when not turned away)."""
    app = create_app(settings)
    reasons: list[str | None] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == ScopeType.HTTP:
                reasons.append(scope.get("state", {}).get(REJECTION_KEY))

    def client(address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=recording, client=(address, 40000))  # type: ignore[arg-type]  # an ASGI app typed more narrowly than httpx's
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)

    async with app.lifespan():
        yield client, reasons


async def test_over_the_rate_is_429_with_retry_after_and_other_keys_go_on(
    services, gateway_settings, openai, upload_dir, caplog
):
    settings = keyed(gateway_settings, rate_per_minute=2, rate_window=1.0)
    async with served(settings) as (client, reasons), client() as http:
        # Bad uploads are quick, and count like any other request that was let in.
        sent = [
            await http.post("/analyze/", files=NOT_A_PICTURE, headers=auth("alice")) for _ in "ab"
        ]
        assert [r.status_code for r in sent] == [400, 400]
        started = time.monotonic()
        over = await http.post("/analyze/", files=files_of(), headers=auth("alice"))
        assert over.status_code == 429, over.text
        assert over.headers["retry-after"] == "1"
        assert "at most 2 per API key" in over.json()["detail"]
        assert over.json()["request_id"] == over.headers["x-request-id"]
        stream = await http.post("/analyze/stream", files=files_of(), headers=auth("alice"))
        assert stream.status_code == 429  # one budget for both routes
        other = await http.post("/analyze/", files=files_of(), headers=auth("bob"))
        assert other.status_code == 200, other.text
        # Refusals are not counted: once the window has passed, alice is let in again.
        await asyncio.sleep(max(0.0, started + 1.05 - time.monotonic()))
        again = await http.post("/analyze/", files=files_of(), headers=auth("alice"))
        assert again.status_code == 200, again.text
    assert reasons.count("rate_limited") == 2
    assert list(upload_dir.iterdir()) == []
    # The log says which key, by its digest, and never the key itself.
    logged = [r.getMessage() for r in caplog.records if "refused (429)" in r.getMessage()]
    assert len(logged) == 2 and all("from key sha256:" in line for line in logged)
    assert not any(KEYS["alice"] in r.getMessage() for r in caplog.records)


async def test_without_keys_the_rate_is_per_client_address(services, gateway_settings, openai):
    settings = with_admission(gateway_settings, rate_per_minute=1, rate_window=60.0)
    async with (
        served(settings) as (client, _),
        client("10.0.0.1") as one,
        client("10.0.0.2") as two,
    ):
        assert (await one.post("/analyze/", files=NOT_A_PICTURE)).status_code == 400
        over = await one.post("/analyze/", files=NOT_A_PICTURE)
        assert over.status_code == 429
        assert 58 <= int(over.headers["retry-after"]) <= 60
        assert "per client address in a minute" in over.json()["detail"]
        assert (await two.post("/analyze/", files=NOT_A_PICTURE)).status_code == 400
        # The page, docs and probes are not rate limited.
        assert (await one.get("/healthz")).status_code == 200


async def wait_for_calls(openai, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(openai.requests) < count:
        assert time.monotonic() < deadline, "the held request never reached the provider"
        await asyncio.sleep(0.02)


async def test_in_flight_caps_answer_503_at_once(services, gateway_settings, openai, upload_dir):
    settings = keyed(gateway_settings, max_in_flight=2, max_in_flight_per_key=1)
    # Each held request's story call waits, so both stay in flight.
    openai.script(Delay(2.0), Delay(2.0))
    async with served(settings) as (client, reasons), client() as http:
        held_alice = asyncio.create_task(
            http.post("/analyze/", files=files_of(), headers=auth("alice"))
        )
        await wait_for_calls(openai, 1)
        started = time.monotonic()
        second = await http.post("/analyze/stream", files=files_of(), headers=auth("alice"))
        assert time.monotonic() - started < 1.0  # refused at once, not queued
        assert second.status_code == 503, second.text
        assert "already has 1 analyses in flight" in second.json()["detail"]
        assert 1 <= int(second.headers["retry-after"]) <= 60
        # Bob has room of his own, until the gateway as a whole is full.
        held_bob = asyncio.create_task(
            http.post("/analyze/", files=files_of(), headers=auth("bob"))
        )
        await wait_for_calls(openai, 2)
        full = await http.post("/analyze/", files=files_of(), headers=auth("carol"))
        assert full.status_code == 503
        assert "server is busy" in full.json()["detail"]
        assert "retry-after" in full.headers
        assert [(await t).status_code for t in (held_alice, held_bob)] == [200, 200]
        # Finished analyses give their slots back.
        after = await http.post("/analyze/", files=files_of(), headers=auth("carol"))
        assert after.status_code == 200, after.text
    assert reasons.count("saturated") == 2
    assert list(upload_dir.iterdir()) == []


def multipart_head(filename: str = "coffee.png") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.mark.parametrize(
    ("pause", "words"),
    [(1.0, "stalled: no data for 0.3 seconds"), (0.1, "took longer than 1 seconds")],
    ids=["stalls", "trickles"],
)
async def test_a_slow_upload_is_cut_off_with_408_and_leaves_nothing(
    services, gateway_settings, openai, upload_dir, pause, words
):
    limits = replace(gateway_settings.limits, upload_idle_seconds=0.3, upload_seconds=1.0)
    photo = sample_photo("coffee.png").read_bytes()

    async def slowly() -> AsyncIterator[bytes]:
        yield multipart_head() + photo[:1000]  # a temp file is open from here on
        for byte in photo[1000:1100]:
            await asyncio.sleep(pause)
            yield bytes([byte])

    settings = replace(gateway_settings, limits=limits)
    async with served(settings) as (client, reasons), client() as http:
        started = time.monotonic()
        response = await http.post("/analyze/stream", content=slowly(), headers=MULTIPART)
        assert time.monotonic() - started < 2.0
        assert response.status_code == 408, response.text
        assert words in response.json()["detail"]
        assert response.headers["connection"] == "close"
        # The slot and the connection's budget are free for the next request.
        assert (await http.post("/analyze/", files=files_of())).status_code == 200
    assert reasons[0] == "slow_upload"
    assert openai.requests[0].image_urls  # only the second request reached the model
    assert list(upload_dir.iterdir()) == []


async def test_the_whole_request_cap_holds_for_a_chunked_body(
    services, gateway_settings, openai, upload_dir
):
    limits = replace(
        gateway_settings.limits, max_images=1, max_image_bytes=100_000, max_video_bytes=100_000
    )
    photo = sample_photo("coffee.png").read_bytes()[:50_000]
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        # A whole, valid form, then an epilogue the multipart parser skips: only the
        # cap on the whole body stops it. No Content-Length: httpx sends it chunked.
        nonlocal sent
        yield multipart_head() + photo + f"\r\n--{BOUNDARY}--\r\n".encode()
        for _ in range(1000):
            sent += 64 * 1024
            yield b"x" * 64 * 1024

    async with (
        served(replace(gateway_settings, limits=limits)) as (client, reasons),
        client() as http,
    ):
        response = await http.post("/analyze/", content=endless(), headers=MULTIPART)
    assert response.status_code == 400, response.text
    assert "larger than the limits allow" in response.json()["detail"]
    assert sent < 2 * 1024 * 1024  # the cap (100 kB + 1 MiB for the form) was not overshot
    assert reasons == ["too_large"]
    assert openai.requests == []
    assert list(upload_dir.iterdir()) == []


def test_limits_are_read_from_the_environment():
    settings = gateway_config.load(
        {
            "IMGSTORY_RATE_LIMIT_PER_MINUTE": "30",
            "IMGSTORY_MAX_IN_FLIGHT": "8",
            "IMGSTORY_MAX_IN_FLIGHT_PER_KEY": "2",
            "IMGSTORY_UPLOAD_IDLE_SECONDS": "5",
            "IMGSTORY_UPLOAD_SECONDS": "90",
        }
    )
    assert settings.admission.rate_per_minute == 30
    assert (settings.admission.max_in_flight, settings.admission.max_in_flight_per_key) == (8, 2)
    assert (settings.limits.upload_idle_seconds, settings.limits.upload_seconds) == (5, 90)
    defaults = gateway_config.load({})
    assert defaults.admission.rate_per_minute == 0 and defaults.admission.max_in_flight == 0
    # Work waits in the job queue, bounded there rather than in a gateway's slots.
    assert (defaults.jobs.max_queued, defaults.jobs.max_queued_per_key) == (1000, 0)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("IMGSTORY_RATE_LIMIT_PER_MINUTE", "-1", "at least 0"),
        ("IMGSTORY_MAX_IN_FLIGHT", "many", "whole number"),
        ("IMGSTORY_MAX_IN_FLIGHT_PER_KEY", "1.5", "whole number"),
        ("IMGSTORY_UPLOAD_IDLE_SECONDS", "0", "above 0"),
        ("IMGSTORY_UPLOAD_SECONDS", "soon", "a number"),
    ],
)
def test_a_bad_limit_stops_the_gateway_naming_it(variable, value, words):
    with pytest.raises(SettingsError) as caught:
        gateway_config.load({variable: value})
    assert variable in str(caught.value) and words in str(caught.value)
