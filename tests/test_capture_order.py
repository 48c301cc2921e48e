"""Photos told in the order they were taken, when every one says when; else as uploaded."""

from __future__ import annotations

import base64
import io
from datetime import datetime

import pytest
from PIL import Image

from contracts.capture import capture_order, time_between
from story_service.story import StoryFrame, build_story_messages
from tests.media import write_exif_jpeg

pytestmark = pytest.mark.usefixtures("blob_store")


def test_the_order_is_the_capture_times_and_ties_keep_the_upload_order():
    stamps = ["2024-05-02T09:00:00", "2024-05-01T18:30:00", "2024-05-02T09:00:00"]
    assert capture_order(stamps) == [1, 0, 2]
    assert capture_order(["2024-05-02T09:00:00", None]) is None
    assert capture_order(["2024-05-02T09:00:00", "not a time"]) is None
    # One with a UTC offset, one without: compared as the cameras' local times.
    assert capture_order(["2024-05-02T09:00:00+07:00", "2024-05-02T08:00:00"]) == [1, 0]


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (20, "moments later"),
        (60, "one minute later"),
        (45 * 60, "45 minutes later"),
        (2 * 3600 + 600, "two hours later"),
        (3 * 86400, "three days later"),
        (200 * 86400, "seven months later"),
        (3 * 365 * 86400, "three years later"),
    ],
)
def test_the_time_between_photos_in_words(seconds, words):
    start = datetime(2024, 1, 1)
    assert time_between(start, datetime.fromtimestamp(start.timestamp() + seconds)) == words


def test_the_model_is_told_the_order_and_the_time_between_photos():
    frames = [
        StoryFrame(jpeg=b"a", taken_at="2024-05-01T10:00:00"),
        StoryFrame(jpeg=b"b", taken_at="2024-05-01T12:05:00"),
    ]
    told = build_story_messages(frames, None, None, "low", by_capture=True)[1]["content"]
    texts = [part["text"] for part in told if part["type"] == "text"]
    assert "in the order they were taken" in texts[0]
    assert texts[1] == "Photo 1 of 2" and texts[2] == "Photo 2 of 2, taken two hours later"
    as_uploaded = build_story_messages(frames, None, None, "low")[1]["content"]
    assert "in the order the user chose" in as_uploaded[0]["text"]
    assert "later" not in str(as_uploaded)


def _widths_seen(openai) -> list[int]:
    story = openai.requests[0]
    return [
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).width
        for url in story.image_urls
    ]


async def test_photos_with_capture_times_are_told_in_that_order(gateway, openai, tmp_path):
    # Uploaded evening, morning, noon; each photo a different width to tell them apart.
    photos = [
        write_exif_jpeg(tmp_path / "c.jpg", taken_at="2024:05:01 18:00:00", size=(96, 48)),
        write_exif_jpeg(tmp_path / "a.jpg", taken_at="2024:05:01 08:00:00", size=(64, 48)),
        write_exif_jpeg(tmp_path / "b.jpg", taken_at="2024:05:01 12:00:00", size=(80, 48)),
    ]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    async with gateway() as client:
        response = await client.post("/analyze/", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["order"] == "captured"
    assert _widths_seen(openai) == [64, 80, 96]
    assert "Photo 3 of 3, taken six hours later" in openai.requests[0].text


async def test_photos_without_every_capture_time_keep_the_upload_order(gateway, openai, tmp_path):
    photos = [
        write_exif_jpeg(tmp_path / "c.jpg", taken_at="2024:05:01 18:00:00", size=(96, 48)),
        write_exif_jpeg(tmp_path / "a.jpg", size=(64, 48)),  # no time
    ]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    async with gateway() as client:
        response = await client.post("/analyze/", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["order"] == "uploaded"
    assert _widths_seen(openai) == [96, 64]
    assert "later" not in openai.requests[0].text
