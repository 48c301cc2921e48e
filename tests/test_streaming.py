"""POST /analyze/stream: stages, story text and the result as Server-Sent Events."""

from __future__ import annotations

import json

import pytest

from devstack.fake_answers import Status
from tests.media import sample_photo, sample_video
from translation_service.translate import thai_share

pytestmark = pytest.mark.usefixtures("blob_store")


def parse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of an SSE body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields.get("data", "null"))))
    return events


def upload(path):
    return [("files", (path.name, path.read_bytes(), "application/octet-stream"))]


async def test_stream_reports_stages_in_order_then_the_result(gateway, openai):
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=upload(sample_photo("chelsea.png")))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    stages = [data["stage"] for kind, data in events if kind == "stage"]
    assert stages == ["uploading", "extracting_frames", "writing_story", "translating"]
    kind, result = events[-1]
    assert kind == "result"
    assert "1 picture" in result["english"] and thai_share(result["thai"]) >= 0.95
    assert result["token_usage"]["total_tokens"] > 0


async def test_stream_carries_the_story_text_as_it_is_written(gateway, openai):
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=upload(sample_video("bikes.mp4")))
    events = parse_events(response.text)
    pieces = "".join(data["text"] for kind, data in events if kind == "story")
    result = events[-1][1]
    assert events[-1][0] == "result"
    assert pieces.strip() == result["english"]


async def test_failure_after_streaming_began_is_an_error_event(gateway, openai):
    openai.script(Status(500), Status(500))
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=upload(sample_photo("coffee.png")))
    assert response.status_code == 200
    kind, data = parse_events(response.text)[-1]
    assert kind == "error"
    assert data["status"] == 503 and "unavailable" in data["detail"]


async def test_bad_upload_is_plain_400_before_streaming(gateway, openai, tmp_path, upload_dir):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=upload(bad))
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "request_id"}
    assert "unsupported file type" in response.json()["detail"]
    assert list(upload_dir.iterdir()) == []


async def test_thai_streams_paragraph_by_paragraph_before_the_result(gateway, openai):
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=upload(sample_photo("chelsea.png")))
    events = parse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result"
    thai = [data["text"] for kind, data in events if kind == "thai"]
    result = events[-1][1]
    # One delta per translation call (the title comes with the first paragraph), in
    # order, and together they are the result's Thai.
    assert len(thai) == 2 and thai[1].startswith("\n\n")
    assert "".join(thai) == result["thai"]
    assert kinds.index("thai") > kinds.index("story")
