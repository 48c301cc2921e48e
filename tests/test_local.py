"""The embedded offline default, end to end: no key, no network, the real local model."""

from __future__ import annotations

from dataclasses import replace

import nats
import pytest

from contracts.text import split_paragraphs
from devstack.gateway import gateway_client
from devstack.nats_server import NatsServer
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from llm.llama_server import build_llama_server_chat
from story_service import config as story_config
from story_service.service import start_service as start_story
from tests.media import sample_photo, write_speech_video
from translation_service import config as translation_config
from translation_service.names import NameSpeller
from translation_service.service import start_service as start_translation
from translation_service.translate import thai_share

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


@pytest.fixture(scope="module")
async def local_stack(tmp_path_factory, qwen_engine):
    """NATS, the engine and the three services configured exactly as `make run` with no key."""
    server = NatsServer(tmp_path_factory.mktemp("nats-local")).start()
    env: dict[str, str] = {"NATS_URL": server.url, "IMGSTORY_LOCAL_SERVER_URL": qwen_engine}
    connections, servers = [], []
    for start, config in (
        (start_frames, frame_config),
        (start_story, story_config),
        (start_translation, translation_config),
    ):
        settings = config.load(env)
        assert getattr(settings, "model", None) is None or settings.model.provider == "local"
        client = await nats.connect(server.url)
        connections.append(client)
        servers.append(await start(client, settings))
    yield server.url
    for service in servers:
        await service.stop()
    for client in connections:
        await client.drain()
    server.stop()


async def test_photo_story_in_english_and_thai_with_no_key(local_stack, gateway_settings):
    settings = replace(gateway_settings, nats_url=local_stack)
    photo = sample_photo("chelsea.png")
    async with gateway_client(settings) as client:
        response = await client.post(
            "/analyze/",
            files=[("files", (photo.name, photo.read_bytes(), "image/png"))],
            data={"prompt": "a short bedtime story"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    english, thai = body["english"], body["thai"]
    assert len(english.split()) >= 40
    assert "cat" in english.lower()  # the classifier's "likely" fact reached the story
    # The offline model is text-only, and the response says so.
    assert body["models"]["story_saw_pictures"] is False
    assert thai_share(thai) >= 0.95
    usage = body["usage_by_stage"]
    # Real llama.cpp counts: the prompt holds the scene sheet, the answer the story.
    assert usage["story"]["input_tokens"] > 100 and usage["story"]["output_tokens"] > 40
    assert usage["translation"]["output_tokens"] > 40
    assert body["token_usage"]["total_tokens"] == sum(
        stage["input_tokens"] + stage["output_tokens"] for stage in usage.values()
    )
    # Alt text from the scene sheet, in both languages; the title line and its Thai.
    (alt,) = body["alt_text"]
    assert alt["english"].startswith("A photo") and "cat" in alt["english"]
    assert alt["thai"] and thai_share(alt["thai"]) >= 0.95
    if body["title"] is not None:
        assert english.startswith(body["title"]["english"])


async def test_a_cast_and_a_length_steer_the_local_story(
    local_stack, gateway_settings, qwen_engine
):
    settings = replace(gateway_settings, nats_url=local_stack)
    photo = sample_photo("chelsea.png")
    files = [("files", (photo.name, photo.read_bytes(), "image/png"))]
    answers = {}
    async with gateway_client(settings) as client:
        for length in ("short", "long"):
            data = {"length": length, "cast": "Pumpkin: the cat"}
            response = await client.post("/analyze/", files=files, data=data)
            assert response.status_code == 200, response.text
            answers[length] = response.json()
    short, long = answers["short"], answers["long"]
    assert len(short["english"].split()) < len(long["english"].split())
    # The offline model writes a long story shorter than asked, and says so.
    assert any("shorter than a long one" in w for w in long["warnings"])
    assert not any("shorter than a long one" in w for w in short["warnings"])
    # The one Thai spelling the translation service gives the name (greedy, so the same here).
    chat = build_llama_server_chat(qwen_engine, timeout=120, wait=10)
    spelling = (await NameSpeller(chat).spell(["Pumpkin"])).spellings["Pumpkin"]
    told = 0
    for body in answers.values():
        assert thai_share(body["thai"]) >= 0.95
        english, thai = split_paragraphs(body["english"]), split_paragraphs(body["thai"])
        assert len(english) == len(thai)
        # The story calls the cat by the name it was given (the 1.5B model, sampling at
        # 0.8, once wrote one of the two without it: at least one must)...
        named = [i for i, paragraph in enumerate(english) if "Pumpkin" in paragraph]
        told += bool(named)
        # ... and the Thai writes it one way: most paragraphs hold that spelling, and the
        # answer says so of any that does not (the 1.5B model sometimes respells it).
        held = [i for i in named if spelling in "".join(thai[i].split())]
        assert len(held) * 2 >= len(named), (spelling, body["thai"])
        if len(held) < len(named):
            assert any(f"Pumpkin is not written {spelling}" in w for w in body["warnings"])
    assert told, [body["english"] for body in answers.values()]


async def test_video_story_uses_what_is_said(local_stack, gateway_settings, tmp_path):
    sentence = "The red lighthouse keeper feeds seven orange cats every morning."
    video = write_speech_video(tmp_path / "speech.mp4", sentence)
    settings = replace(gateway_settings, nats_url=local_stack)
    async with gateway_client(settings) as client:
        response = await client.post(
            "/analyze/", files=[("files", (video.name, video.read_bytes(), "video/mp4"))]
        )
    assert response.status_code == 200, response.text
    english = response.json()["english"].lower()
    heard = [
        word
        for word in ("lighthouse", "keeper", "seven", "orange", "cats", "morning")
        if word in english
    ]
    assert len(heard) >= 2, english
    assert thai_share(response.json()["thai"]) >= 0.95
