"""POST /analyze/ end to end: real gateway, real services, real NATS, fake OpenAI over HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from bus.settings import SettingsError
from contracts.messages import Usage
from devstack.fake_answers import (
    THAI_ANSWER,
    Delay,
    Reply,
    Status,
    count_completion_tokens,
    count_prompt_tokens,
    default_answer,
)
from devstack.gateway import gateway_client
from gateway.pricing import parse_prices
from tests.media import sample_photo, sample_video, write_audio_only_mp4, write_jpeg
from translation_service.translate import thai_share

pytestmark = pytest.mark.usefixtures("blob_store")


def files_of(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def usage_of(fake, index: int, answer: str | None = None) -> tuple[int, int]:
    """(prompt, completion) tokens the fake charged for its index-th request."""
    request = fake.requests[index]
    text = (
        default_answer(request.messages, request.get("response_format"))
        if answer is None
        else answer
    )
    return count_prompt_tokens(request.messages), count_completion_tokens(text)


async def test_one_photo_gives_english_and_thai_with_summed_usage(gateway, openai, upload_dir):
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("chelsea.png")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert "1 picture" in body["english"]
    assert thai_share(body["thai"]) >= 0.95
    # The story (with its alt text), then a translation for each paragraph (the title
    # with the first) and one for the alt text.
    story, *translations = openai.requests
    assert len(story.image_urls) == 1 and len(translations) == 3
    assert not any(t.image_urls for t in translations)
    assert body["thai"].count("\n\n") == body["english"].count("\n\n") == 2
    assert len(body["alt_text"]) == 1 and body["alt_text"][0]["thai"]
    sp, sc = usage_of(openai, 0)
    tp = sum(usage_of(openai, i)[0] for i in (1, 2, 3))
    tc = sum(usage_of(openai, i)[1] for i in (1, 2, 3))
    assert body["token_usage"] == {
        "input_tokens": sp + tp,
        "output_tokens": sc + tc,
        "total_tokens": sp + sc + tp + tc,
    }
    assert body["usage_by_stage"]["story"]["input_tokens"] == sp
    assert body["media"] == "image" and body["frames_used"] == 1
    assert body["models"] == {
        "story": "fake-story",
        "translation": "fake-translate",
        "story_saw_pictures": True,
    }
    assert list(upload_dir.iterdir()) == []


async def test_several_photos_all_reach_the_story_model(gateway, openai):
    photos = [sample_photo(n) for n in ("astronaut.png", "coffee.png", "rocket.jpg")]
    async with gateway() as client:
        response = await client.post(
            "/analyze", files=files_of(*photos), data={"prompt": "as a haiku sequence"}
        )
    assert response.status_code == 200, response.text
    assert "3 pictures" in response.json()["english"]
    story = openai.requests[0]
    assert len(story.image_urls) == 3
    assert "as a haiku sequence" in story.text
    assert "Photo 3 of 3" in story.text


async def test_real_mp4_sends_timestamped_frames(gateway, openai):
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_video("bigbuckbunny.mp4")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "video"
    assert 2 <= body["frames_used"] <= 8
    story = openai.requests[0]
    assert len(story.image_urls) == body["frames_used"]
    assert "Frame 1 at 0:0" in story.text


async def test_photo_bytes_sent_upstream_carry_no_gps(gateway, openai, tmp_path):
    import base64
    import io

    from PIL import Image

    photo = write_jpeg(tmp_path / "trip.jpg", size=(640, 480), gps=True)
    assert b"GPS" in photo.read_bytes() or Image.open(photo).getexif().get_ifd(0x8825)
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(photo))
    assert response.status_code == 200, response.text
    data_url = openai.requests[0].image_urls[0]
    jpeg = base64.b64decode(data_url.split(",", 1)[1])
    sent = Image.open(io.BytesIO(jpeg))
    assert not sent.getexif() and "exif" not in sent.info


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: _write(d / "notes.jpg", b"just some text, not a picture"),
            "unsupported file type",
        ),
        (lambda d: _write(d / "empty.png", b""), "empty"),
        (lambda d: _write(d / "fake.gif", b"GIF89a" + b"\0" * 64), "image"),
        (lambda d: _write(d / "broken.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 500), "image"),
        (lambda d: _write(d / "broken.mp4", b"\0\0\0\x18ftypmp42" + b"\x07" * 500), "video"),
    ],
    ids=["text-as-jpg", "empty", "corrupt-gif", "corrupt-jpeg", "corrupt-mp4"],
)
async def test_bad_files_are_400_with_detail(gateway, openai, upload_dir, tmp_path, make, message):
    bad = make(tmp_path)
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(bad))
        assert response.status_code == 400, response.text
        assert message in response.json()["detail"]
        assert set(response.json()) == {"detail", "request_id"}
        assert response.json()["request_id"] == response.headers["x-request-id"]
        # The server keeps serving after bad input.
        good = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
        assert good.status_code == 200
    assert list(upload_dir.iterdir()) == []


def _noisy_jpeg(path: Path) -> Path:
    """A photo whose random pixels do not compress: a few hundred KB."""
    import os

    from PIL import Image

    Image.frombytes("RGB", (800, 600), os.urandom(800 * 600 * 3)).save(path, quality=95)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_video_mixed_with_images_is_400(gateway, openai):
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=files_of(sample_photo("coffee.png"), sample_video("bikes.mp4"))
        )
    assert response.status_code == 400
    assert "not both" in response.json()["detail"]
    assert openai.requests == []


async def test_two_videos_are_400(gateway, openai):
    video = sample_video("bikes.mp4")
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(video, video))
    assert response.status_code == 400


async def test_no_files_is_400(gateway, openai):
    async with gateway() as client:
        response = await client.post(
            "/analyze/", data={"prompt": "a story"}, files={"x": ("a", b"b")}
        )
        assert response.status_code == 400
        assert "no files" in response.json()["detail"]
        response = await client.post("/analyze/", json={"files": []})
        assert response.status_code == 400
        assert "multipart/form-data" in response.json()["detail"]


async def test_image_over_the_limit_is_400_and_nothing_is_kept(
    gateway, gateway_settings, openai, upload_dir, tmp_path
):
    limits = replace(gateway_settings.limits, max_image_bytes=50_000)
    big = _noisy_jpeg(tmp_path / "big.jpg")
    assert big.stat().st_size > 50_000
    async with gateway(replace(gateway_settings, limits=limits)) as client:
        response = await client.post("/analyze/", files=files_of(big))
    assert response.status_code == 400
    assert "too large" in response.json()["detail"]
    assert list(upload_dir.iterdir()) == []
    assert openai.requests == []


async def test_too_many_images_and_too_long_prompt_are_400(gateway, gateway_settings, openai):
    limits = replace(gateway_settings.limits, max_images=2, max_prompt_chars=20)
    photo = sample_photo("coffee.png")
    async with gateway(replace(gateway_settings, limits=limits)) as client:
        many = await client.post("/analyze/", files=files_of(photo, photo, photo))
        long = await client.post("/analyze/", files=files_of(photo), data={"prompt": "x" * 21})
    assert many.status_code == 400 and "too many" in many.json()["detail"]
    assert long.status_code == 400 and "prompt is too long" in long.json()["detail"]


async def test_a_prompt_over_the_limit_by_blanks_and_two_prompts_are_400(
    gateway, gateway_settings, openai
):
    # The OpenAPI document says maxLength of the prompt as sent, and one prompt field.
    limits = replace(gateway_settings.limits, max_prompt_chars=20)
    photo = sample_photo("coffee.png")
    async with gateway(replace(gateway_settings, limits=limits)) as client:
        padded = await client.post(
            "/analyze/", files=files_of(photo), data={"prompt": "x" * 20 + "\x1c \n"}
        )
        twice = await client.post("/analyze/", files=files_of(photo), data={"prompt": ["a", "b"]})
        trimmed = await client.post(
            "/analyze/", files=files_of(photo), data={"prompt": " " + "x" * 18 + " "}
        )
    assert padded.status_code == 400 and "prompt is too long" in padded.json()["detail"]
    assert twice.status_code == 400 and "one 'prompt'" in twice.json()["detail"]
    assert trimmed.status_code == 200, trimmed.text


async def test_mp4_without_a_video_stream_is_422(gateway, openai, tmp_path):
    audio_only = write_audio_only_mp4(tmp_path / "voice.mp4")
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(audio_only))
    assert response.status_code == 422, response.text
    assert "video stream" in response.json()["detail"]


async def test_upstream_rate_limit_is_429_with_retry_after(gateway, openai):
    # Both attempts (the SDK retries once) are refused.
    openai.script(*[Status(429, headers={"retry-after": "1"})] * 2)
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([Status(500), Status(502)], "unavailable"),
        ([Status(401)], "API key"),
        ([Delay(4, Reply("late")), Delay(4, Reply("late"))], "timed out"),
    ],
    ids=["5xx", "bad-key", "timeout"],
)
async def test_upstream_failures_are_503(gateway, openai, steps, words):
    openai.script(*steps)
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert words in detail
    assert "sk-test" not in detail


async def test_translation_that_is_not_thai_twice_is_503(gateway, openai):
    openai.script(Reply("A story."), Reply("Still English."), Reply("Nope, English again."))
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 503
    assert "Thai" in response.json()["detail"]


async def test_translation_retried_once_when_not_thai(gateway, openai):
    openai.script(Reply("A story."), Reply("In English, oops."), Reply(THAI_ANSWER))
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["thai"] == THAI_ANSWER.strip()
    answers = ["A story.", "In English, oops.", THAI_ANSWER]
    charged = [usage_of(openai, i, a) for i, a in enumerate(answers)]
    assert body["token_usage"]["input_tokens"] == sum(p for p, _ in charged)
    assert body["token_usage"]["output_tokens"] == sum(c for _, c in charged)


async def test_service_not_running_is_fast_503(empty_nats_url, gateway_settings, services):
    settings = replace(gateway_settings, nats_url=empty_nats_url)
    async with gateway_client(settings) as client:
        started = asyncio.get_running_loop().time()
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
        elapsed = asyncio.get_running_loop().time() - started
        ready = await client.get("/readyz")
    assert response.status_code == 503
    assert "frames service is not running" in response.json()["detail"]
    # Not a timing target: a hang would take the full frames timeout (120 s).
    assert elapsed < settings.frames_timeout / 4
    assert ready.status_code == 503
    assert ready.json()["services"] == {
        "imgstory-frames": False,
        "imgstory-story": False,
        "imgstory-translation": False,
    }


async def test_health_and_readiness(gateway):
    async with gateway() as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert all(ready.json()["services"].values())


async def test_unknown_route_is_404_detail(gateway):
    async with gateway() as client:
        response = await client.get("/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"detail", "request_id"}


async def test_translation_starts_while_the_story_is_written(gateway, openai):
    opening = "The Long Road\n\nThey set out at dawn."
    story = f"{opening}\n\n" + "They walked on. " * 30 + "\n\nAt last they were home."
    # The story streams slowly; the opening's translation is answered meanwhile.
    openai.script(Reply(story, pace=0.05), Reply("ถนนสายยาว\n\nพวกเขาออกเดินทางตอนรุ่งสาง"))
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 200, response.text
    _, opening_call, *rest = openai.requests
    # The title travels with the paragraph after it: one call, not two.
    assert opening_call.text.rstrip().endswith(f"<story>\n{opening}\n</story>")
    # It was asked for while the story was still streaming.
    assert openai.stats()["max_in_flight"] >= 2
    assert len(rest) == 2 and "The Long Road" in rest[1].text  # later ones get the context
    assert response.json()["thai"].startswith("ถนนสายยาว\n\nพวกเขาออกเดินทางตอนรุ่งสาง\n\n")


async def test_a_failed_translation_stops_the_story_being_written(gateway, openai):
    story = (
        "The Long Road\n\nThey set out at dawn.\n\n"
        + "They walked on. " * 200
        + "\n\nAt last they were home."
    )
    # About 12 s of story; the opening's translation fails twice (not Thai) long before.
    openai.script(Reply(story, pace=0.02), Reply("The Long Road"), Reply("Still English"))
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 503
    assert "Thai" in response.json()["detail"]
    # The story's stream was dropped by the story service, not read to its end.
    for _ in range(100):
        if openai.abandoned:
            break
        await asyncio.sleep(0.05)
    assert openai.abandoned == 1


async def test_estimated_cost_follows_the_price_table(gateway, gateway_settings, openai):
    prices = parse_prices("fake-story=1000/2000, fake-translate=10/20")
    async with gateway(replace(gateway_settings, prices=prices)) as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    body = response.json()
    story, translation = body["usage_by_stage"]["story"], body["usage_by_stage"]["translation"]
    expected = (
        story["input_tokens"] * 1000
        + story["output_tokens"] * 2000
        + translation["input_tokens"] * 10
        + translation["output_tokens"] * 20
    ) / 1_000_000
    assert body["estimated_cost_usd"] == pytest.approx(expected) and expected > 0
    async with gateway() as client:  # no table: no estimate
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.json()["estimated_cost_usd"] is None


def test_price_table_matches_dated_names_and_refuses_nonsense():
    table = parse_prices("gpt-4.1=2/8,gpt-4.1-mini=0.4/1.6")
    assert table.price_of("gpt-4.1-mini-2025-04-14") == table.prices["gpt-4.1-mini"]
    assert table.price_of("gpt-4.1") == table.prices["gpt-4.1"]
    assert table.price_of("gpt-4.1o") is None
    assert table.cost([("other", Usage(1, 1))]) is None
    for bad in ("gpt=1", "gpt=a/b", "=1/2", "gpt=-1/2", "gpt=nan/1"):
        with pytest.raises(SettingsError, match="IMGSTORY_PRICES"):
            parse_prices(bad)
