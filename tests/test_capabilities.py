"""Scene facts only for text-only story models: replicas state it, the gateway asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts.messages import ExtractFrames
from contracts.rpc import Server
from contracts.subjects import EXTRACT_FRAMES, SEES_IMAGES, STORY
from gateway.capabilities import StoryCapabilities
from tests.media import sample_photo


@pytest.fixture
async def bus(empty_nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(empty_nats_url)
    yield client
    await client.drain()


async def replica(nc: Client, sees: str | None) -> Server:
    return await Server.start(nc, STORY, metadata=None if sees is None else {SEES_IMAGES: sees})


async def test_facts_are_asked_for_until_every_replica_sees_images(bus: Client) -> None:
    capabilities = StoryCapabilities(bus, window=0.2)
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
    capabilities = StoryCapabilities(bus, window=0.2)
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
