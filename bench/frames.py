"""Time the frame stage: photos and a long 1080p video, with scene facts and without.

Prints, side by side from one run, what FrameExtractor.extract (the frames endpoint's
work: fetch the upload from the blob store, decode, perceive when asked, store the
frames back) takes on real NATS for
  - a 1920x1080 JPEG and a 24 MP JPEG, with scene_facts False (a vision model) and True
    (a text-only model), and what each frame costs in gpt-4.1-mini image tokens and bytes;
  - a 47 MB 1080p 140 s MP4: the frames alone, and with transcription alongside (its
    audio a tone, which the speech gate turns away, or a spoken paragraph);
with the goals of issue 11 (60 ms a photo, 600 ms a video's frames) and the ratios.
"fetch alone" and "decode alone" split the stage: blobs.fetch_to_file of the upload,
then prepare_image or extract_video on the file, each timed on its own.

The video is made once with ffmpeg (about 90 s) under $XDG_CACHE_HOME/imgstory/bench.
Run: .venv/bin/python -m bench.frames [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nats
import numpy as np
from PIL import Image

from bus import blobs
from bus.blobs import BlobStore
from contracts.messages import ExtractFrames, FramesExtracted, MediaKind
from devstack.media import sample_photo
from devstack.nats_server import NatsServer
from frame_service import config as frame_config
from frame_service.images import prepare_image
from frame_service.perception import Perceiver
from frame_service.service import FrameExtractor
from frame_service.transcribe import Transcriber
from frame_service.video import extract_video
from model_files import assemble

PHOTO_GOAL_MS = 60.0
VIDEO_GOAL_MS = 600.0
VIDEO_SECONDS = 140
SPEECH = (
    "The old fisherman walks down to the harbour before sunrise. He checks his nets, "
    "talks to the gulls and counts the boats coming home. Every morning his daughter "
    "brings him hot tea and they watch the sea turn from grey to gold."
)


def gpt41_mini_tokens(width: int, height: int) -> int:
    """Image tokens gpt-4.1-mini charges: 32 px patches, at most 1536, times 1.62."""
    patches = min(1536, math.ceil(width / 32) * math.ceil(height / 32))
    return int(patches * 1.62)


def write_photo(path: Path, size: tuple[int, int]) -> Path:
    """A photo-like JPEG (a sample photo scaled up, with sensor-like noise), quality 90."""
    with Image.open(sample_photo("coffee.png")) as source:
        scaled = source.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    noisy = np.asarray(scaled).astype(np.int16) + np.random.default_rng(1).normal(
        0, 4, (*size[::-1], 3)
    )
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def ffmpeg(*args: str) -> None:
    found = shutil.which("ffmpeg")
    if found is None:
        raise SystemExit("ffmpeg is not installed (Debian package ffmpeg)")
    subprocess.run([found, "-nostdin", "-y", "-loglevel", "error", *args], check=True)


def long_videos() -> tuple[Path, Path]:
    """(tone, speech): the same 140 s 1080p30 H.264 picture (keyframe every 2 s, 2.6 Mb/s),
    one with a 440 Hz tone for sound, one with a spoken paragraph 30 s in."""
    folder = assemble.cache_dir("bench")
    folder.mkdir(parents=True, exist_ok=True)
    tone, speech = folder / "long1080-tone.mp4", folder / "long1080-speech.mp4"
    if not tone.exists():
        print(f"making {tone} with ffmpeg (once, about 90 s)...", flush=True)
        partial = tone.with_suffix(".part.mp4")
        ffmpeg(
            *("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", str(VIDEO_SECONDS), "-c:v", "libx264", "-preset", "veryfast"),
            *("-b:v", "2600k", "-maxrate", "2800k", "-bufsize", "5600k", "-g", "60"),
            *("-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-ac", "2"),
            str(partial),
        )
        partial.rename(tone)
    if not speech.exists():
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise SystemExit("espeak-ng is not installed (Debian package espeak-ng)")
        with tempfile.TemporaryDirectory() as scratch:
            wav = Path(scratch) / "speech.wav"
            subprocess.run([espeak, "-w", str(wav), SPEECH], check=True, capture_output=True)
            partial = speech.with_suffix(".part.mp4")
            ffmpeg(
                *("-i", str(tone), "-i", str(wav)),
                *("-filter_complex", "[1:a]adelay=delays=30000:all=1,apad[a]"),
                *("-map", "0:v", "-map", "[a]", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k"),
                *("-ar", "48000", "-ac", "2", "-t", str(VIDEO_SECONDS), str(partial)),
            )
            partial.rename(speech)
    return tone, speech


@dataclass
class Timing:
    ms: float  # median
    spread: str  # min-max
    reply: FramesExtracted
    frame_bytes: int  # size of the first frame stored


async def time_extract(
    extractor: FrameExtractor,
    store: BlobStore,
    path: Path,
    kind: MediaKind,
    runs: int,
    *,
    scene_facts: bool,
) -> Timing:
    """Median ms of extractor.extract over runs (after one warm-up), frames removed each time."""
    await blobs.put_file(store, "bench/upload-0", path)
    samples: list[float] = []
    reply: FramesExtracted | None = None
    frame_bytes = 0
    for run in range(runs + 1):
        request = ExtractFrames(
            request_id=f"bench-{run}",
            upload="bench/upload-0",
            kind=kind,
            scene_facts=scene_facts,
        )
        started = time.perf_counter()
        reply = await extractor.extract(request)
        elapsed = (time.perf_counter() - started) * 1000
        frame_bytes = len(await blobs.fetch_bytes(store, reply.frames[0].object))
        await blobs.delete_quietly(store, [frame.object for frame in reply.frames])
        if run:
            samples.append(elapsed)
    await blobs.delete_quietly(store, ["bench/upload-0"])
    assert reply is not None
    spread = f"{min(samples):.0f}-{max(samples):.0f}"
    return Timing(statistics.median(samples), spread, reply, frame_bytes)


async def time_parts(
    store: BlobStore, path: Path, work: Callable[[Path], object], runs: int
) -> tuple[float, float]:
    """Median ms of fetching path from the blob store alone, and of work on the file alone."""
    await blobs.put_file(store, "bench/parts-0", path)
    fetches: list[float] = []
    works: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "upload"
        for run in range(runs + 1):
            started = time.perf_counter()
            await blobs.fetch_to_file(store, "bench/parts-0", copy)
            fetched = time.perf_counter()
            await asyncio.to_thread(work, copy)
            done = time.perf_counter()
            if run:
                fetches.append((fetched - started) * 1000)
                works.append((done - fetched) * 1000)
    await blobs.delete_quietly(store, ["bench/parts-0"])
    return statistics.median(fetches), statistics.median(works)


COLUMNS = ["facts off", "facts on", "on/off", "fetch alone", "decode alone"]


def _row(label: str, cells: list[str]) -> None:
    print(f"{label:<34}" + "".join(f"{cell:>17}" for cell in cells))


def _ms(timing: Timing) -> str:
    return f"{timing.ms:.0f} ({timing.spread})"


def _goal(what: str, ms: float, goal: float) -> None:
    verdict = "met" if ms <= goal else "MISSED"
    print(f"{'':<34}{what} goal <= {goal:.0f} ms: {verdict}, {ms / goal:.2f} of it")


def _cost(timing: Timing) -> str:
    frame = timing.reply.frames[0]
    tokens = gpt41_mini_tokens(frame.width, frame.height)
    return f"{frame.width}x{frame.height}, {tokens} tokens, {timing.frame_bytes / 1000:.0f} kB"


async def main(runs: int) -> None:
    tone_video, speech_video = long_videos()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = [
            ("1920x1080 JPEG", write_photo(folder / "photo-1080p.jpg", (1920, 1080))),
            ("24 MP JPEG", write_photo(folder / "photo-24mp.jpg", (6000, 4000))),
        ]
        server = NatsServer(folder / "nats").start()
        nc = await nats.connect(server.url)
        try:
            store = await blobs.open_bucket(nc.jetstream())
            settings = replace(frame_config.load({}), work_dir=str(folder))
            perceiver = await asyncio.to_thread(Perceiver, ocr=settings.ocr)
            transcriber = await asyncio.to_thread(Transcriber)
            listening = FrameExtractor(nc, store, settings, perceiver, transcriber)
            deaf = FrameExtractor(nc, store, settings, perceiver, None)
            video_runs = max(1, (runs + 1) // 2)
            print(
                f"frame stage (FrameExtractor.extract on real NATS), ms; {os.cpu_count()} cores, "
                f"load average {os.getloadavg()[0]:.1f}\n{runs} runs a photo, {video_runs} a "
                "video; medians (min-max). facts = ExtractFrames.scene_facts\n"
            )
            _row("", COLUMNS)
            costs: list[tuple[str, Timing]] = []
            for label, path in photos:
                off, on = [
                    await time_extract(
                        listening, store, path, MediaKind.IMAGE, runs, scene_facts=facts
                    )
                    for facts in (False, True)
                ]
                fetch, decode = await time_parts(
                    store, path, lambda copy: prepare_image(copy, settings.bounds), runs
                )
                name = f"{label}, {path.stat().st_size / 1e6:.1f} MB"
                _row(
                    name,
                    [_ms(off), _ms(on), f"{on.ms / off.ms:.1f}x", f"{fetch:.0f}", f"{decode:.0f}"],
                )
                costs.append((label, off))
                if path == photos[0][1]:
                    _goal("vision-model photo", off.ms, PHOTO_GOAL_MS)

            mb = tone_video.stat().st_size / 1e6
            off, on = [
                await time_extract(
                    deaf, store, tone_video, MediaKind.VIDEO, video_runs, scene_facts=facts
                )
                for facts in (False, True)
            ]
            fetch, decode = await time_parts(
                store,
                tone_video,
                lambda copy: extract_video(copy, 8, settings.video_bounds),
                video_runs,
            )
            name = f"{VIDEO_SECONDS} s 1080p MP4, {mb:.0f} MB"
            _row(
                name, [_ms(off), _ms(on), f"{on.ms / off.ms:.1f}x", f"{fetch:.0f}", f"{decode:.0f}"]
            )
            _goal("8 frames (decode)", decode, VIDEO_GOAL_MS)
            costs.append(("video frame", off))
            for label, video in (("tone, no speech", tone_video), ("13 s of speech", speech_video)):
                heard = await time_extract(
                    listening, store, video, MediaKind.VIDEO, video_runs, scene_facts=False
                )
                transcript = heard.reply.video.transcript if heard.reply.video else None
                _row(f"  + transcribing: {label}", [_ms(heard), "", f"{heard.ms / off.ms:.1f}x"])
                print(f"{'':<34}heard: {(transcript or '-')[:60]!r}")

            print("\nwhat one frame costs the story model (gpt-4.1-mini's patch rule):")
            for label, timing in costs:
                print(f"  {label:<18}{_cost(timing)}")
            print("  goal for a 1920x1080 photo: <= 829 tokens, <= 310 kB")
        finally:
            await nc.close()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs per photo measurement")
    asyncio.run(main(parser.parse_args().runs))
