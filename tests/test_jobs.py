"""POST /jobs and the job API over the real services, real NATS and the fake provider."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from standardwebhooks import Webhook

from bus import blobs
from contracts.messages import JobEvent, Progress
from contracts.subjects import JOB_EVENTS_STREAM, JOB_LIVE_PREFIX, JOBS_BUCKET, JOBS_STREAM
from devstack.fake_answers import Reply
from devstack.media import sample_photo
from gateway.auth import ApiKeys
from gateway.jobs.service import STORES_AT_ONCE
from tests.support.jobs import until_finished
from tests.support.receiver import running_receiver

KEY_A, KEY_B = "key-a-" + "a" * 20, "key-b-" + "b" * 20


pytestmark = pytest.mark.usefixtures("no_job_left")


def files_of(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _events(text: str) -> list[tuple[str, str, dict]]:
    """(id, event, data) of each Server-Sent Event in ``text``."""
    found = []
    for block in text.strip().split("\r\n\r\n" if "\r\n" in text else "\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            found.append(
                (fields.get("id", ""), fields["event"], msgspec.json.decode(fields["data"]))
            )
    return found


async def test_a_job_is_accepted_then_answers_what_analyze_would(gateway, openai):
    async with gateway() as client:
        accepted = await client.post("/jobs", files=files_of(sample_photo("coffee.png")))
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert accepted.headers["location"] == f"/jobs/{job['id']}" == job["urls"]["self"]
        assert job["status"] in {"queued", "running"} and job["attempts"] in {0, 1}
        assert len(job["id"]) >= 32  # 128 random bits, hex
        done = await until_finished(client, job["urls"]["self"])
    assert done["status"] == "succeeded" and done["error"] is None
    result = done["result"]
    assert result["english"] and result["thai"]
    usage = result["token_usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert done["attempts"] == 1 and done["stage"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"] < done["expires_at"]
    kept_until = done["media"].pop("kept_until")
    assert done["media"] == {"kind": "image", "files": 1, "kept": True}
    # Kept an hour after it ended, for another take (IMGSTORY_JOB_KEEP_MEDIA).
    assert kept_until > done["finished_at"]
    assert done["urls"] == {
        "self": f"/jobs/{job['id']}",
        "events": f"/jobs/{job['id']}/events",
        "cancel": f"/jobs/{job['id']}/cancel",
        "again": f"/jobs/{job['id']}/again",
    }
    assert done["request"] == {"prompt": None, "length": None, "cast": []}


async def test_an_upload_error_is_400_before_any_job_exists(gateway, nc: Client):
    async with gateway() as client:
        before = await nc.jetstream().stream_info(f"KV_{JOBS_BUCKET}")
        refused = await client.post(
            "/jobs", files=[("files", ("a.txt", b"not media", "text/plain"))]
        )
        after = await nc.jetstream().stream_info(f"KV_{JOBS_BUCKET}")
    assert refused.status_code == 400
    assert "unsupported file type" in refused.json()["detail"]
    assert after.state.last_seq == before.state.last_seq  # nothing written


async def test_events_replay_with_ids_and_resume_after_the_last_seen(gateway, openai):
    async with gateway() as client:
        job = (await client.post("/jobs", files=files_of(sample_photo("coffee.png")))).json()
        await until_finished(client, job["urls"]["self"])
        everything = _events((await client.get(job["urls"]["events"])).text)
        names = [name for _, name, _ in everything]
        assert names[0] == "status" and everything[0][2]["status"] == "queued"
        assert names[-2:] == ["result", "status"] and everything[-1][2]["status"] == "succeeded"
        assert {"stage", "story", "thai"} <= set(names)
        numbers = [int(number) for number, _, _ in everything]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        middle = everything[len(everything) // 2][0]
        rest = _events(
            (await client.get(job["urls"]["events"], headers={"Last-Event-ID": middle})).text
        )
    assert rest == everything[len(everything) // 2 + 1 :]  # nothing twice, nothing lost


async def test_cancel_mid_story_stops_the_model_calls(gateway, openai, blob_store):
    openai.script(Reply("The Long Road\n\n" + "They walked on. " * 200, pace=0.05))
    async with gateway() as client:
        job = (await client.post("/jobs", files=files_of(sample_photo("coffee.png")))).json()
        deadline = time.monotonic() + 20
        while (await client.get(job["urls"]["self"])).json()["stage"] != "writing_story":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the story is streaming
        canceled = await client.post(job["urls"]["cancel"])
        again = await client.post(job["urls"]["cancel"])
        calls = openai.stats()["chat_calls"]
        await asyncio.sleep(1.5)
        after = openai.stats()
        final = (await client.get(job["urls"]["self"])).json()
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert again.status_code == 200 and again.json()["status"] == "canceled"  # idempotent
    assert after["in_flight"] == 0 and after["chat_calls"] == calls  # stopped, none after
    assert final["status"] == "canceled" and final["result"] is None


async def test_cancel_after_the_end_is_409(gateway, openai):
    async with gateway() as client:
        job = (await client.post("/jobs", files=files_of(sample_photo("coffee.png")))).json()
        await until_finished(client, job["urls"]["self"])
        refused = await client.post(job["urls"]["cancel"])
    assert refused.status_code == 409
    assert refused.json()["detail"] == "the job has succeeded already"


async def test_delete_leaves_nothing_in_the_bucket_the_streams_or_the_kv(
    gateway, openai, nc: Client, blob_store
):
    big = sample_photo("astronaut.png")  # over the inline size: its upload is stored
    async with gateway() as client:
        job = (await client.post("/jobs", files=files_of(big))).json()
        assert any(
            name.startswith(f"jobs/{job['id']}/") for name in await blobs.list_names(blob_store)
        )
        await until_finished(client, job["urls"]["self"])
        # Kept for another take: the upload and the frame read from it.
        names = await blobs.list_names(blob_store)
        assert sorted(n for n in names if n.startswith(f"jobs/{job['id']}/")) == [
            f"jobs/{job['id']}/upload-0",
            f"jobs/{job['id']}/upload-0/frame-0",
        ]
        deleted = await client.delete(job["urls"]["self"])
        gone = await client.get(job["urls"]["self"])
        events_gone = await client.get(job["urls"]["events"])
    assert deleted.status_code == 204
    assert gone.status_code == 404 and gone.json()["detail"] == "no such job"
    assert events_gone.status_code == 404
    js = nc.jetstream()
    kv = await js.stream_info(f"KV_{JOBS_BUCKET}", subjects_filter=f"$KV.{JOBS_BUCKET}.{job['id']}")
    events = await js.stream_info(
        JOB_EVENTS_STREAM, subjects_filter=f"imgstory.v1.jobs.events.{job['id']}"
    )
    assert not (kv.state.subjects or {}) and not (events.state.subjects or {})
    work = await js.stream_info(JOBS_STREAM)
    assert work.state.messages == 0
    # blob_store's teardown checks the bucket is empty


async def test_a_job_is_its_keys_and_only_listed_to_it(gateway, gateway_settings, openai):
    keyed = replace(
        gateway_settings,
        admission=replace(gateway_settings.admission, api_keys=ApiKeys.parse([KEY_A, KEY_B])),
    )
    a, b = {"X-API-Key": KEY_A}, {"Authorization": f"Bearer {KEY_B}"}
    async with gateway(keyed) as client:
        first = (
            await client.post("/jobs", files=files_of(sample_photo("coffee.png")), headers=a)
        ).json()
        second = (
            await client.post("/jobs", files=files_of(sample_photo("coffee.png")), headers=a)
        ).json()
        await until_finished(client, first["urls"]["self"], a)
        theirs = await client.get(first["urls"]["self"], headers=b)
        cancel_theirs = await client.post(first["urls"]["cancel"], headers=b)
        delete_theirs = await client.delete(first["urls"]["self"], headers=b)
        nobody = await client.get(first["urls"]["self"])
        page = (await client.get("/jobs?limit=1", headers=a)).json()
        next_page = (
            await client.get(f"/jobs?limit=1&cursor={page['next_cursor']}", headers=a)
        ).json()
        b_list = (await client.get("/jobs", headers=b)).json()
    assert theirs.status_code == cancel_theirs.status_code == delete_theirs.status_code == 404
    assert nobody.status_code == 401
    assert [j["id"] for j in page["jobs"]] == [second["id"]]  # newest first
    assert [j["id"] for j in next_page["jobs"]] == [first["id"]]
    assert next_page["next_cursor"] is None
    assert b_list == {"jobs": [], "next_cursor": None}


async def test_with_keys_off_jobs_are_not_listed(gateway):
    async with gateway() as client:
        listing = await client.get("/jobs")
    assert listing.status_code in {404, 405}


async def test_past_the_queue_bound_is_503_with_retry_after(gateway, gateway_settings, openai):
    openai.script(Reply("Slow.\n\nStory.", pace=0.2), Reply("Slow.\n\nStory.", pace=0.2))
    bounded = replace(gateway_settings, jobs=replace(gateway_settings.jobs, max_queued=1))
    async with gateway(bounded) as client:
        first = await client.post("/jobs", files=files_of(sample_photo("coffee.png")))
        refused = await client.post("/jobs", files=files_of(sample_photo("coffee.png")))
        await until_finished(client, first.json()["urls"]["self"])
    assert first.status_code == 202
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "queue is full" in refused.json()["detail"]


async def test_a_webhook_is_refused_while_the_server_has_no_secret(gateway):
    async with gateway() as client:
        refused = await client.post(
            "/jobs",
            files=files_of(sample_photo("coffee.png")),
            data={"webhook_url": "https://example.com/hook"},
        )
    assert refused.status_code == 400
    assert refused.json()["detail"] == "webhooks are not enabled on this server"


@pytest.mark.parametrize("job_id", ["job_" + "0" * 32, "nope", "a.b", "a*", "%20", "a>"])
async def test_an_unknown_job_is_404(gateway, job_id):
    async with gateway() as client:
        answers = [
            await client.get(f"/jobs/{job_id}"),
            await client.get(f"/jobs/{job_id}/events"),
            await client.post(f"/jobs/{job_id}/cancel"),
            await client.delete(f"/jobs/{job_id}"),
        ]
    assert [a.status_code for a in answers] == [404] * 4
    assert all(a.json()["detail"] == "no such job" for a in answers)


async def test_the_same_idempotency_key_and_body_answer_the_same_job_once(gateway, openai):
    key = {"Idempotency-Key": f"order-{time.monotonic_ns()}"}
    photo = files_of(sample_photo("coffee.png"))
    async with gateway() as client:
        first = await client.post("/jobs", files=photo, headers=key)
        again = await client.post("/jobs", files=photo, headers=key)
        done = await until_finished(client, first.json()["urls"]["self"])
        calls = openai.stats()["chat_calls"]
        late = await client.post("/jobs", files=photo, headers=key)
        other = await client.post("/jobs", files=files_of(sample_photo("chelsea.png")), headers=key)
        too_long = await client.post("/jobs", files=photo, headers={"Idempotency-Key": "k" * 256})
        await asyncio.sleep(0.5)
        calls_after = openai.stats()["chat_calls"]
    assert first.status_code == again.status_code == late.status_code == 202
    assert first.json()["id"] == again.json()["id"] == late.json()["id"] == done["id"]
    assert late.json()["status"] == "succeeded"
    assert calls_after == calls  # no second work for the repeats
    assert other.status_code == 422
    assert "another request" in other.json()["detail"]
    assert too_long.status_code == 400


async def test_a_deleted_jobs_idempotency_key_may_make_a_new_job(gateway, openai):
    key = {"Idempotency-Key": f"order-{time.monotonic_ns()}"}
    photo = files_of(sample_photo("coffee.png"))
    async with gateway() as client:
        first = (await client.post("/jobs", files=photo, headers=key)).json()
        await until_finished(client, first["urls"]["self"])
        await client.delete(first["urls"]["self"])
        second = await client.post("/jobs", files=photo, headers=key)
        await until_finished(client, second.json()["urls"]["self"])
    assert second.status_code == 202 and second.json()["id"] != first["id"]


async def test_metrics_show_the_queue_and_the_outcomes(gateway, openai):
    async with gateway() as client:
        job = (await client.post("/jobs", files=files_of(sample_photo("coffee.png")))).json()
        await until_finished(client, job["urls"]["self"])
        page = (await client.get("/metrics")).text
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in page.splitlines()
        if line.startswith("imgstory_jobs")
    }
    assert figures['imgstory_jobs_total{status="succeeded"}'] == 1
    assert figures['imgstory_jobs_total{status="canceled"}'] == 0
    assert figures["imgstory_jobs_queued"] == 0
    assert figures["imgstory_jobs_oldest_queued_seconds"] == 0


async def test_a_kept_analysis_stays_as_a_job(gateway, openai):
    async with gateway() as client:
        answer = await client.post(
            "/analyze/", files=files_of(sample_photo("coffee.png")), data={"keep": "true"}
        )
        where = answer.headers["content-location"]
        job = (await client.get(where)).json()
        unkept = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert answer.status_code == 200 and where.startswith("/jobs/job_")
    assert job["status"] == "succeeded" and job["result"] == answer.json()
    assert unkept.status_code == 200 and "content-location" not in unkept.headers


async def test_a_synchronous_analysis_stores_no_event_and_writes_its_record_thrice(
    gateway, openai, nc: Client
):
    """An unkept job is read by nobody but its caller: its events are told to it live,
    none is stored, and its record is written when made, claimed and ended, no more
    (no stage); it is gone once the caller has the answer."""
    js = nc.jetstream()
    told: list[str] = []

    async def heard(msg) -> None:
        told.append(msgspec.msgpack.decode(msg.data, type=JobEvent).name)

    pieces: list[str] = []

    async def progress(msg) -> None:
        with contextlib.suppress(msgspec.ValidationError):
            pieces.append(msgspec.msgpack.decode(msg.data, type=Progress).text or "")

    live = await nc.subscribe(f"{JOB_LIVE_PREFIX}.*", cb=heard)
    side = await nc.subscribe("imgstory.v1.progress.*", cb=progress)
    events_before = (await js.stream_info(JOB_EVENTS_STREAM)).state.last_seq
    records_before = (await js.stream_info(f"KV_{JOBS_BUCKET}")).state.last_seq
    async with gateway() as client:
        answer = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    await nc.flush()
    await live.unsubscribe()
    await side.unsubscribe()
    events = await js.stream_info(JOB_EVENTS_STREAM)
    records = await js.stream_info(f"KV_{JOBS_BUCKET}")
    assert answer.status_code == 200, answer.text
    assert events.state.last_seq == events_before
    assert records.state.last_seq - records_before == 3
    assert told == ["status", "status", "result", "status"]  # queued, running, the end
    for _ in range(50):  # removed just after the answer
        if (await js.stream_info(f"KV_{JOBS_BUCKET}")).state.messages == 0:
            break
        await asyncio.sleep(0.05)
    assert (await js.stream_info(f"KV_{JOBS_BUCKET}")).state.messages == 0
    # Nobody was shown the story as it was written: no piece of it was sent.
    assert not any(pieces)


async def test_a_burst_of_submissions_stores_a_few_uploads_at_a_time(
    gateway, openai, monkeypatch: pytest.MonkeyPatch
):
    """Uploads are copied into the bucket STORES_AT_ONCE at a time, the rest waiting on
    disk: memory does not grow with the burst (bench.jobs measures how much)."""
    storing = {"now": 0, "most": 0}
    put_file = blobs.put_file

    async def counted(store, name, path) -> None:
        storing["now"] += 1
        storing["most"] = max(storing["most"], storing["now"])
        try:
            await asyncio.sleep(0.01)  # long enough for every submission to get here
            await put_file(store, name, path)
        finally:
            storing["now"] -= 1

    monkeypatch.setattr(blobs, "put_file", counted)
    count = 3 * STORES_AT_ONCE
    async with gateway() as client:
        sent = await asyncio.gather(
            *(
                client.post("/jobs", files=files_of(sample_photo("coffee.png")))
                for _ in range(count)
            )
        )
        assert [r.status_code for r in sent] == [202] * count
        ended = [await until_finished(client, r.json()["urls"]["self"]) for r in sent]
    assert {job["status"] for job in ended} == {"succeeded"}
    assert storing["most"] == STORES_AT_ONCE


async def test_a_webhook_is_signed_and_delivered_when_the_job_ends(
    gateway, gateway_settings, openai
):
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    hooked = replace(
        gateway_settings,
        webhooks=replace(gateway_settings.webhooks, secret=b"s" * 32, allow_private=True),
    )
    with running_receiver() as receiver:
        receiver.answers = [(500, {}), (204, {})]
        async with gateway(
            replace(hooked, webhooks=replace(hooked.webhooks, first_backoff=0.05))
        ) as client:
            job = (
                await client.post(
                    "/jobs",
                    files=files_of(sample_photo("coffee.png")),
                    data={"webhook_url": receiver.url},
                )
            ).json()
            await until_finished(client, job["urls"]["self"])
            deadline = time.monotonic() + 15
            while (await client.get(job["urls"]["self"])).json()["webhook"][
                "status"
            ] != "delivered":
                assert time.monotonic() < deadline, "the webhook was not delivered"
                await asyncio.sleep(0.1)
            shown = (await client.get(job["urls"]["self"])).json()
    assert len(receiver.seen) == 2  # a failed try, then the delivery
    ids = {headers["webhook-id"] for _, headers, _ in receiver.seen}
    assert ids == {f"msg_{job['id']}"}  # one logical delivery
    _, headers, body = receiver.seen[-1]
    delivered = Webhook(secret).verify(body, headers)
    assert delivered["id"] == job["id"] and delivered["status"] == "succeeded"
    assert delivered["result"]["english"]
    assert shown["webhook"]["attempts"] == 2 and shown["webhook"]["last_status"] == 204
