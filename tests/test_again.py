"""Another take of a job: a new job on the same media, with no upload and no second frame stage."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from nats.aio.client import Client

from bus import blobs
from bus.job_keys import JobKeys
from bus.jobs import JobsConfig, JobStore
from contracts.subjects import EXTRACT_FRAMES
from devstack.media import sample_photo
from gateway.jobs.service import JobService
from tests.support.jobs import submit_photo, until_finished

pytestmark = pytest.mark.usefixtures("no_job_left")


async def _frame_calls(nc: Client) -> int:
    """How many ExtractFrames requests the frame service has served (its micro stats)."""
    reply = await nc.request("$SRV.STATS.imgstory-frames", b"", timeout=2)
    stats = json.loads(reply.data)
    return sum(
        endpoint["num_requests"]
        for endpoint in stats["endpoints"]
        if endpoint["subject"] == EXTRACT_FRAMES.subject
    )


async def _names(store, job_id: str) -> list[str]:
    return sorted(n for n in await blobs.list_names(store) if n.startswith(f"jobs/{job_id}/"))


async def test_another_take_reuses_the_media_and_the_frames(gateway, openai, nc, blob_store):
    photo = sample_photo("astronaut.png")  # stored in the bucket, not inline
    async with gateway() as client:
        first = await submit_photo(client, photo)
        done = await until_finished(client, first["urls"]["self"])
        assert done["status"] == "succeeded"
        assert (
            done["media"]["kept"] is True and done["urls"]["again"] == f"/jobs/{first['id']}/again"
        )
        kept = await _names(blob_store, first["id"])
        assert f"jobs/{first['id']}/upload-0" in kept and len(kept) == 2  # the upload, its frame
        frames_before = await _frame_calls(nc)
        story_calls = len(openai.requests)
        answer = await client.post(
            done["urls"]["again"], json={"length": "short", "cast": "Neil: the astronaut"}
        )
        assert answer.status_code == 202, answer.text
        again = answer.json()
        assert (
            again["again_of"] == first["id"] and answer.headers["location"] == again["urls"]["self"]
        )
        assert again["request"] == {
            "prompt": None,
            "length": "short",
            "cast": ["Neil: the astronaut"],
        }
        second = await until_finished(client, again["urls"]["self"])
    assert second["status"] == "succeeded", second
    assert await _frame_calls(nc) == frames_before  # no second frame stage
    story = openai.requests[story_calls]
    assert "Neil: the astronaut" in story.text
    assert "80 to 120 words" in story.text
    assert len(story.image_urls) == 1  # the kept frame, read from the bucket
    # The copies are the new job's own: deleting the first job leaves them.
    assert len(await _names(blob_store, again["id"])) == 2


async def test_an_unchanged_field_keeps_the_originals(gateway, openai):
    photo = sample_photo("coffee.png")
    async with gateway() as client:
        first = await submit_photo(client, photo, prompt="as a haiku", cast="Mo: the barista")
        await until_finished(client, first["urls"]["self"])
        same = (await client.post(f"/jobs/{first['id']}/again")).json()
        cleared = (
            await client.post(f"/jobs/{first['id']}/again", json={"prompt": "", "cast": ""})
        ).json()
    assert same["request"] == {"prompt": "as a haiku", "length": None, "cast": ["Mo: the barista"]}
    assert cleared["request"] == {"prompt": None, "length": None, "cast": []}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"length": "epic"}, "'length' is one of 'short', 'medium', 'long'"),
        ({"cast": "no colon"}, "'cast' line 1 is not 'Name: who or what'"),
        ({"prompt": None}, "send a JSON object with any of 'prompt', 'length' and 'cast'"),
        ([1], "send a JSON object"),
    ],
)
async def test_a_wrong_change_is_400(gateway, openai, body, detail):
    photo = sample_photo("coffee.png")
    async with gateway() as client:
        first = await submit_photo(client, photo)
        answer = await client.post(f"/jobs/{first['id']}/again", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"]


async def test_once_the_media_are_gone_it_is_410_and_nothing_is_made(
    gateway, gateway_settings, openai, blob_store, nc
):
    settings = replace(gateway_settings, jobs=replace(gateway_settings.jobs, keep_media=0))
    photo = sample_photo("astronaut.png")
    async with gateway(settings) as client:
        first = await submit_photo(client, photo)
        done = await until_finished(client, first["urls"]["self"])
        assert done["media"]["kept"] is False and done["urls"]["again"] is None
        for _ in range(50):  # removed as soon as it ended
            if not await _names(blob_store, first["id"]):
                break
            await asyncio.sleep(0.05)
        assert await _names(blob_store, first["id"]) == []
        answer = await client.post(f"/jobs/{first['id']}/again", json={"length": "long"})
        unknown = await client.post("/jobs/job_" + "0" * 32 + "/again")
    assert answer.status_code == 410 and "upload them again" in answer.json()["detail"]
    assert unknown.status_code == 404
    store = await JobStore.open(nc.jetstream())
    assert await store.job_ids() == [first["id"]]


async def test_the_sweep_removes_kept_media_once_their_time_is_up(
    gateway, gateway_settings, openai, blob_store, nc
):
    photo = sample_photo("astronaut.png")
    async with gateway() as client:
        first = await submit_photo(client, photo)
        await until_finished(client, first["urls"]["self"])
        js = nc.jetstream()
        store, media = await JobStore.open(js), await blobs.open_bucket(js)
        keys = await JobKeys.open(js, JobsConfig())

        def sweeper(keep_media: float) -> JobService:
            jobs = replace(gateway_settings.jobs, keep_media=keep_media)
            return JobService(nc, store, keys, media, jobs)

        assert await sweeper(3600).sweep() == 0 and await _names(blob_store, first["id"])
        assert await sweeper(0).sweep() == 0  # the job stays; its time to be retold is up
        job = (await client.get(first["urls"]["self"])).json()
    assert await _names(blob_store, first["id"]) == []
    assert job["status"] == "succeeded" and job["media"]["kept"] is False
