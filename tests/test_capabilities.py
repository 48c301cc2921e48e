"""Scene facts only for text-only story models: replicas state it, the gateway asks for it."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from PIL import Image

from bus.server import Server
from contracts.messages import ExtractFrames
from contracts.subjects import (
    BY_PARAGRAPH,
    EXTRACT_FRAMES,
    FRAMES,
    INLINE_FRAMES,
    INLINE_UPLOADS,
    SEES_IMAGES,
    STORY,
    TRANSLATION,
    WRITE_STORY,
)
from gateway.analysis import INLINE_MAX_BYTES
from gateway.capabilities import Capabilities
from tests.media import sample_photo


@pytest.fixture
async def bus(empty_nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(empty_nats_url)
    yield client
    await client.drain()


T = TypeVar("T")


async def replica(nc: Client, sees: str | None) -> Server:
    return await Server.start(nc, STORY, metadata=None if sees is None else {SEES_IMAGES: sees})


async def test_facts_are_asked_for_until_every_replica_sees_images(bus: Client) -> None:
    capabilities = Capabilities(bus, window=0.2)
    await capabilities.refresh()
    assert capabilities.scene_facts_needed  # nobody answered: do not guess

    seeing = await replica(bus, "true")
    await capabilities.refresh()
    assert not capabilities.scene_facts_needed

    blind = await replica(bus, "false")
    await capabilities.refresh()
    assert capabilities.scene_facts_needed  # NATS may hand the story to either replica

    await blind.stop()
    await capabilities.refresh()
    assert not capabilities.scene_facts_needed

    older = await replica(bus, None)  # a replica from before the capability existed
    await capabilities.refresh()
    assert capabilities.scene_facts_needed
    await older.stop()
    await seeing.stop()


async def test_the_last_answer_holds_while_no_replica_answers(bus: Client) -> None:
    capabilities = Capabilities(bus, window=0.2)
    seeing = await replica(bus, "true")
    await capabilities.refresh()
    await seeing.stop()
    await capabilities.refresh()
    assert not capabilities.scene_facts_needed


@pytest.mark.usefixtures("blob_store")
async def test_a_vision_story_model_gets_frames_without_scene_facts(gateway, openai, nc) -> None:
    asked: list[ExtractFrames] = []

    async def spy(msg: Msg) -> None:
        asked.append(EXTRACT_FRAMES.decode_request(msg.data))

    subscription = await nc.subscribe(EXTRACT_FRAMES.subject, cb=spy)
    photo = sample_photo("chelsea.png")
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=[("files", (photo.name, photo.read_bytes(), "image/png"))]
        )
    await subscription.unsubscribe()
    assert response.status_code == 200, response.text
    assert [request.scene_facts for request in asked] == [False]
    [story, *_] = openai.requests
    assert "Scene sheet" not in story.text and len(story.image_urls) == 1


async def test_inline_media_only_while_every_replica_reads_it(bus: Client) -> None:
    capabilities = Capabilities(bus, window=0.2)
    frames = await Server.start(bus, FRAMES, metadata={INLINE_UPLOADS: "true"})
    story = await Server.start(bus, STORY, metadata={SEES_IMAGES: "true", INLINE_FRAMES: "true"})
    await capabilities.refresh()
    assert capabilities.inline_uploads and capabilities.inline_frames
    assert not capabilities.translate_by_paragraph  # no translation replica has answered
    remote = await Server.start(bus, TRANSLATION, metadata={BY_PARAGRAPH: "true"})
    await capabilities.refresh()
    assert capabilities.translate_by_paragraph
    local = await Server.start(bus, TRANSLATION, metadata={BY_PARAGRAPH: "false"})
    await capabilities.refresh()
    assert not capabilities.translate_by_paragraph  # the local one would queue them
    await remote.stop()
    await local.stop()
    # A replica of an older version states neither: nothing inline may reach it.
    older_frames = await Server.start(bus, FRAMES)
    older_story = await Server.start(bus, STORY, metadata={SEES_IMAGES: "true"})
    await capabilities.refresh()
    assert not capabilities.inline_uploads and not capabilities.inline_frames
    for server in (frames, story, older_frames, older_story):
        await server.stop()


async def spied(nc: Client, subject: str, decode: Callable[[bytes], T]) -> tuple[list[T], Any]:
    heard: list[T] = []

    async def spy(msg: Msg) -> None:
        heard.append(decode(msg.data))

    return heard, await nc.subscribe(subject, cb=spy)


@pytest.mark.usefixtures("blob_store")
async def test_a_small_photo_and_its_frame_travel_inline_a_large_one_is_stored(
    gateway, openai, nc, tmp_path: Path
) -> None:
    extracts, spy_frames = await spied(nc, EXTRACT_FRAMES.subject, EXTRACT_FRAMES.decode_request)
    stories, spy_story = await spied(nc, WRITE_STORY.subject, WRITE_STORY.decode_request)
    small = sample_photo("chelsea.png")
    # Noise does not compress: well over the inline limit.
    large = tmp_path / "noise.png"
    Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3)).save(large)
    assert small.stat().st_size < INLINE_MAX_BYTES < large.stat().st_size
    async with gateway() as client:
        for photo in (small, large):
            response = await client.post(
                "/analyze/", files=[("files", (photo.name, photo.read_bytes(), "image/png"))]
            )
            assert response.status_code == 200, response.text
    await spy_frames.unsubscribe()
    await spy_story.unsubscribe()
    inline, stored = extracts
    assert inline.data == small.read_bytes()
    assert stored.data is None and stored.upload
    # The small photo's frame came back inline; the story read it from the request.
    [frame] = stories[0].frames
    assert frame.jpeg is not None and frame.object == ""
    assert openai.requests[0].image_urls[0].endswith(base64.b64encode(frame.jpeg).decode())
    # Both requests' objects are gone (the blob_store fixture checks the bucket is empty).
