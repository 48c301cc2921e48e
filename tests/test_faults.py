"""Faults on real parts: replicas killed mid-request, NATS stopped and restarted, clients
that leave, deadlines that pass. Each test bounds its own time and checks that the blob
bucket and the upload directory end empty. The scenarios live in devstack.faults;
``python -m bench.faults`` runs the same ones and prints their figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from bus import blobs
from contracts.subjects import BLOB_BUCKET
from devstack import faults
from devstack.fake_openai import FakeOpenAI
from devstack.faults import PHOTO, bucket_names, gateway_settings, in_process
from devstack.gateway import gateway_client
from devstack.nats_server import NatsServer
from devstack.processes import free_port
from gateway.cleanup import sweep_orphans
from gateway.uploads import UPLOAD_PREFIX


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server on a fixed port and store, so it can be stopped and come back."""
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield server
    server.stop()


def assert_nothing_left(outcome: faults.Outcome) -> None:
    assert outcome.left_objects == [] and outcome.left_files == [], outcome


# --- replica death and liveness ---------------------------------------------------------


async def test_a_killed_story_replica_is_noticed_and_its_calls_run_on_the_other(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    outcome = await faults.killed_replica(empty_nats_url, fake, upload_dir, held=4)
    assert outcome.statuses == [200] * 4, outcome
    assert outcome.seconds < 10, outcome.seconds
    baseline = outcome.notes["baseline"]
    for body in outcome.notes["bodies"]:
        # The dead replica's calls are not counted: the same cost as the quiet request.
        assert body["usage_by_stage"] == baseline["usage_by_stage"]
        assert body["token_usage"] == baseline["token_usage"]
    assert_nothing_left(outcome)


async def test_with_no_replica_left_the_client_gets_503_within_seconds(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    outcome = await faults.no_replica_left(empty_nats_url, fake, upload_dir)
    assert outcome.statuses == [503], outcome
    assert "story service is not running" in outcome.details[0]
    assert outcome.seconds < 8, outcome.seconds
    assert_nothing_left(outcome)


# --- deadlines and clients that leave -----------------------------------------------------


async def test_a_passed_deadline_is_503_and_the_service_stops_the_work(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    outcome = await faults.deadline_passed(empty_nats_url, fake, upload_dir, patience=2.0)
    assert outcome.statuses == [503], outcome
    assert "did not answer within 2 s" in outcome.details[0]
    assert outcome.seconds < 6, outcome.seconds
    # The story replica dropped the call rather than waiting out the provider.
    assert outcome.notes["dropped_after"] < faults.SLOW / 2, outcome.notes
    assert_nothing_left(outcome)


async def test_a_client_that_leaves_mid_request_stops_the_work(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    outcome = await faults.client_leaves(empty_nats_url, fake, upload_dir)
    assert outcome.seconds < 5, outcome.seconds
    assert_nothing_left(outcome)


@pytest.mark.parametrize("closed_at", ["uploading", "writing_story"])
async def test_closing_the_event_stream_stops_the_work_and_leaves_nothing(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path, closed_at: str
) -> None:
    outcome = await faults.stream_closed(empty_nats_url, fake, upload_dir, closed_at)
    assert outcome.notes["stream_status"] == 200
    assert outcome.seconds < 5, outcome.seconds
    assert_nothing_left(outcome)


async def test_a_gateway_told_to_stop_finishes_its_requests_and_leaves_nothing(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    outcome = await faults.gateway_stopped(empty_nats_url, fake, upload_dir)
    assert outcome.statuses == [200], outcome
    # uvicorn drains, then re-raises the signal it caught: a graceful end shows as -SIGTERM.
    assert outcome.notes["exit_code"] in (0, -signal.SIGTERM)
    assert_nothing_left(outcome)


# --- NATS outage ------------------------------------------------------------------------


async def test_while_nats_is_down_requests_get_503_fast_and_service_resumes_after(
    bus: NatsServer, fake: FakeOpenAI, upload_dir: Path
) -> None:
    outcome = await faults.nats_outage(bus, fake, upload_dir)
    assert outcome.statuses == [200, 503, 200], outcome
    assert outcome.details[1] == "the message bus (NATS) is unavailable"
    assert outcome.seconds < 2, outcome.seconds
    assert outcome.notes["ready_while_down"]["nats"] is False
    assert outcome.notes["ready_after"] < 10, outcome.notes
    assert_nothing_left(outcome)
    # One line per change of state, not a traceback per reconnect attempt: one line each
    # way for the gateway and each of the three services.
    assert outcome.notes["tracebacks"] == []
    assert len(outcome.notes["lost"]) == 4 and len(outcome.notes["back"]) == 4, outcome.notes


async def test_readiness_says_so_when_the_blob_bucket_does_not_answer(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, upload_dir)) as client:
            before = await client.get("/readyz")
            admin = await nats.connect(empty_nats_url)
            try:
                await admin.jetstream().delete_object_store(BLOB_BUCKET)
            finally:
                await admin.close()
            after = await client.get("/readyz")
    assert before.status_code == 200 and before.json()["bucket"] is True
    assert after.status_code == 503, after.text
    assert after.json()["bucket"] is False and after.json()["nats"] is True


# --- bad input stays a 4xx ---------------------------------------------------------------


async def test_a_boundary_longer_than_the_parser_allows_is_400(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    boundary = "b" * 300
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + PHOTO.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, upload_dir)) as client:
            response = await client.post(
                "/analyze/",
                content=body,
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "the multipart body is malformed"
    assert list(upload_dir.iterdir()) == []


async def test_a_corrupt_mp4_detail_names_no_server_path(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    corrupt = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 64
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, upload_dir)) as client:
            response = await client.post(
                "/analyze/", files=[("files", ("broken.mp4", corrupt, "video/mp4"))]
            )
    assert response.status_code in (400, 422), response.text
    detail = json.dumps(response.json())
    for leak in ("/tmp", "imgstory-", "Errno", "<", "av.error"):
        assert leak not in detail, detail
    assert await bucket_names(empty_nats_url) == []


# --- orphans of an earlier crash --------------------------------------------------------


async def test_a_starting_gateway_sweeps_what_a_crashed_one_left(
    empty_nats_url: str, fake: FakeOpenAI, upload_dir: Path
) -> None:
    stale = upload_dir / f"{UPLOAD_PREFIX}crashed"
    stale.write_bytes(b"half an upload")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = upload_dir / f"{UPLOAD_PREFIX}in-flight-elsewhere"
    fresh.write_bytes(b"someone's upload")
    unrelated = upload_dir / "notes.txt"
    unrelated.write_text("not ours")
    async with in_process(empty_nats_url, fake):
        async with gateway_client(gateway_settings(empty_nats_url, upload_dir)):
            pass
    assert sorted(p.name for p in upload_dir.iterdir()) == sorted([fresh.name, unrelated.name])


async def test_sweeping_the_bucket_removes_only_what_is_older_than_any_live_request(
    empty_nats_url: str,
) -> None:
    client = await nats.connect(empty_nats_url)
    try:
        store = await blobs.open_bucket(client.jetstream())
        await blobs.put_bytes(store, "old-request/upload-0", b"left behind")
        assert await sweep_orphans(store, older_than=3600) == 0
        assert await blobs.list_names(store) == ["old-request/upload-0"]
        await asyncio.sleep(0.05)
        assert await sweep_orphans(store, older_than=0.01) == 1
        assert await blobs.list_names(store) == []
    finally:
        await client.close()
