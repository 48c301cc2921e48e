"""The fake provider's stats endpoint, which the concurrency benchmark reads from another process."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from PIL import Image

from devstack.fake_answers import Delay
from devstack.fake_openai import RESET_PATH, STATS_PATH, FakeOpenAI


def chat(base_url: str, url: str = "") -> int:
    content: list[dict[str, Any]] = [{"type": "text", "text": "a story"}]
    if url:
        content.append({"type": "image_url", "image_url": {"url": url, "detail": "low"}})
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": content}]}
    try:
        return httpx.post(f"{base_url}/chat/completions", json=body, timeout=30).status_code
    except httpx.TransportError:
        return 0  # held until the fake stopped, which answers nothing


def stats_of(fake: FakeOpenAI) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{fake.port}{STATS_PATH}").json()


def test_stats_count_the_calls_held_at_once_and_reset_keeps_those_still_held() -> None:
    fake = FakeOpenAI().start()
    try:
        fake.script(Delay(60), Delay(60), Delay(60))
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(chat, fake.base_url) for _ in range(3)]
            deadline = time.monotonic() + 10  # a hang guard, not a timing assertion
            while (stats := stats_of(fake))["in_flight"] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert (stats["in_flight"], stats["max_in_flight"], stats["chat_calls"]) == (3, 3, 3)

            reset = httpx.post(f"http://127.0.0.1:{fake.port}{RESET_PATH}").json()
            assert (reset["in_flight"], reset["max_in_flight"], reset["chat_calls"]) == (3, 3, 0)

            fake.stop()  # ends the Delays unanswered
            assert [call.result() for call in held] == [0, 0, 0]
        after = fake.stats()
        assert (after["in_flight"], after["max_in_flight"]) == (0, 3)
        assert after["busy_seconds"] > 0
    finally:
        fake.stop()


def test_stats_size_the_images_received_from_their_headers() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    photo = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    not_an_image = "data:image/jpeg;base64," + base64.b64encode(b"hello").decode()
    with FakeOpenAI() as fake:
        assert chat(fake.base_url, photo) == 200
        assert chat(fake.base_url, not_an_image) == 200
        assert chat(fake.base_url) == 200
        stats = stats_of(fake)
    assert stats["chat_calls"] == 3
    assert stats["in_flight"] == 0
    assert stats["max_in_flight"] == 1
    assert stats["images"] == [
        {"model": "gpt-4.1-mini", "detail": "low", "bytes": len(jpeg), "width": 64, "height": 48},
        {"model": "gpt-4.1-mini", "detail": "low", "bytes": 5, "width": None, "height": None},
    ]


def test_stats_and_reset_are_not_recorded_as_api_traffic() -> None:
    with FakeOpenAI() as fake:
        stats_of(fake)
        httpx.post(f"http://127.0.0.1:{fake.port}{RESET_PATH}")
        assert fake.all_requests == []
