"""Time the frame stage per format: a HEIC against the same picture as a JPEG, a MOV against
the same video as an MP4, and a big phone JPEG read back from the bucket (issue 18).

Prints, side by side from one run, what FrameExtractor.extract (fetch the upload from
the blob bucket on real NATS, decode, store the frame back; no scene facts, as for a
vision model) takes for
  - a 12 MP (4032x3024) photo as JPEG and as HEIC, the same pixels, each about 2 MB, the
    HEIC a grid of 512x512 tiles as iPhones write it: goal HEIC <= 1.5x JPEG;
  - a 60 s 1080p30 H.264 video as MP4, and the same stream remuxed into MOV: goal
    MOV <= 1.5x MP4; and, for information, the same picture as an HEVC MOV, as iPhones
    record;
  - a 24 MP JPEG of about 9 MB (goal <= 125 ms including the bucket), with its fetch
    and decode timed apart;
  - the 12 MP JPEG tagged Display P3, whose picture is brought to sRGB: the conversion's
    cost is the difference;
  - a 5 s 480p animation (50 frames) as GIF and as WebP, told as a short video.

The videos are made once with ffmpeg (about a minute) under $XDG_CACHE_HOME/imgstory/bench.
Run: make bench-formats   (or: .venv/bin/python -m bench.formats [--runs 5])
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nats
import numpy as np
from PIL import Image

from bench.frames import Timing, ffmpeg, time_extract, time_parts
from bus import blobs
from bus.blobs import BlobStore
from contracts.messages import MediaKind
from devstack.media import sample_photo
from devstack.nats_server import NatsServer
from frame_service import config as frame_config
from frame_service.colour_spaces import rgb_profile, source_profile, to_srgb
from frame_service.images import prepare_image
from frame_service.service import FrameExtractor
from model_files import assemble

RATIO_GOAL = 1.5
BIG_PHOTO_GOAL_MS = 125.0
VIDEO_SECONDS = 60
DISPLAY_P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.3127, 0.3290))
ANIMATION_FRAMES = 50  # 5 s at 10 frames a second


def phone_picture(size: tuple[int, int], grain: float) -> Image.Image:
    """A sample photo scaled to ``size`` with sensor-like grain (more grain, more bytes)."""
    with Image.open(sample_photo("coffee.png")) as source:
        scaled = source.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    noise = np.random.default_rng(1).normal(0, grain, (*size[::-1], 3))
    return Image.fromarray(np.clip(np.asarray(scaled) + noise, 0, 255).astype(np.uint8))


def videos() -> dict[str, Path]:
    """The same 60 s 1080p30 picture as H.264 MP4, H.264 MOV (remuxed) and HEVC MOV."""
    folder = assemble.cache_dir("bench")
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "MP4 (H.264)": folder / "formats-1080p.mp4",
        "MOV (H.264, same stream)": folder / "formats-1080p.mov",
        "MOV (HEVC)": folder / "formats-1080p-hevc.mov",
    }
    mp4, mov, hevc = made.values()
    if not mp4.exists():
        print(f"making {mp4.parent}/formats-* with ffmpeg (once, about a minute)...", flush=True)
        partial = mp4.with_suffix(".part.mp4")
        ffmpeg(
            *("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"),
            *("-t", str(VIDEO_SECONDS), "-c:v", "libx264", "-preset", "veryfast"),
            *("-b:v", "2600k", "-g", "60", "-pix_fmt", "yuv420p", str(partial)),
        )
        partial.rename(mp4)
    if not mov.exists():
        ffmpeg("-i", str(mp4), "-c", "copy", "-f", "mov", str(mov))
    if not hevc.exists():
        partial = hevc.with_suffix(".part.mov")
        ffmpeg(
            *("-i", str(mp4), "-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1"),
            *("-x265-params", "log-level=error:keyint=60", "-b:v", "2600k"),
            *("-f", "mov", str(partial)),
        )
        partial.rename(hevc)
    return made


def write_animations(folder: Path) -> dict[str, Path]:
    """A 5 s 480p animation of a panning sample photo, as GIF and as lossy WebP."""
    # Undithered, as GIF makers do for video: dithering's noise triples the file.
    still = phone_picture((854, 480), 0).quantize(256, dither=Image.Dither.NONE)
    pixels = np.asarray(still)
    frames = []
    for index in range(ANIMATION_FRAMES):
        frame = Image.fromarray(np.roll(pixels, index * 8, axis=1), "P")
        frame.putpalette(still.getpalette() or [])
        frames.append(frame)
    made = {"GIF": folder / "pan.gif", "WebP": folder / "pan.webp"}
    frames[0].save(made["GIF"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    first, *rest = (frame.convert("RGB") for frame in frames)
    first.save(made["WebP"], save_all=True, append_images=rest, duration=100, quality=80)
    return made


async def time_display_p3(
    extractor: FrameExtractor, store: BlobStore, picture: Image.Image, srgb: Timing, runs: int
) -> None:
    """The row of the 12 MP photo tagged Display P3, and what its conversion to sRGB costs."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jpeg, p3 = folder / "phone.jpg", folder / "phone-p3.jpg"
        picture.save(jpeg, quality=90)
        icc = rgb_profile(*DISPLAY_P3, name="Display P3")
        picture.save(p3, quality=90, icc_profile=icc)
        t = await time_extract(extractor, store, p3, MediaKind.IMAGE, runs, scene_facts=False)
        _row("12 MP JPEG, Display P3", t.ms, t.spread, f"{t.ms / srgb.ms:.2f}x")
        # The conversion's cost from decoding alone, the two pictures in turn, several times
        # each: the frame stage's spread on a shared machine is wider than the cost itself.
        decodes: dict[Path, list[float]] = {jpeg: [], p3: []}
        for _ in range(3):
            for path, spent in decodes.items():
                _, decode = await time_parts(
                    store, path, lambda copy: prepare_image(copy, extractor.settings.bounds), runs
                )
                spent.append(decode)
        plain, converted = (min(spent) for spent in decodes.values())
        print(f"{'':<38}of it: decoding {converted:.0f} ms (the sRGB JPEG: {plain:.0f} ms)")
        sent = picture.resize(extractor.settings.bounds.fit_size(*picture.size))
        profile = source_profile({"icc_profile": icc})
        costs = []
        for _ in range(10 * runs):
            started = time.perf_counter()
            to_srgb(sent, profile)
            costs.append((time.perf_counter() - started) * 1000)
        print(
            f"{'':<38}the conversion to sRGB alone, at the {sent.width}x{sent.height} sent: "
            f"{statistics.median(costs):.1f} ms (min {min(costs):.1f})"
        )


async def time_animations(extractor: FrameExtractor, store: BlobStore, runs: int) -> None:
    """The rows of a 5 s 480p animation as GIF and WebP, each told as a short video."""
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in write_animations(Path(tmp)).items():
            t = await time_extract(extractor, store, path, MediaKind.IMAGE, runs, scene_facts=False)
            name = f"5 s 480p animated {label}, {path.stat().st_size / 1e6:.1f} MB"
            _row(name, t.ms, t.spread, "", f"{len(t.reply.frames)} frames, as a video")


def _row(label: str, ms: float, spread: str, ratio: str = "", note: str = "") -> None:
    print(f"{label:<38}{ms:>9.0f} ms ({spread:>9}){ratio:>10}  {note}")


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        picture = phone_picture((4032, 3024), 4)
        jpeg, heic = folder / "phone.jpg", folder / "phone.heic"
        # The sizes phones write: about 2 MB each for 12 MP, and 9 MB for the big JPEG.
        picture.save(jpeg, quality=90)
        # iPhones store a photo as 8x6 tiles of 512x512, each its own HEVC picture.
        picture.save(heic, format="HEIF", quality=55, tile_size=512)
        big = folder / "big-24mp.jpg"
        phone_picture((6000, 4000), 9).save(big, quality=93)
        made = videos()
        server = NatsServer(folder / "nats").start()
        nc = await nats.connect(server.url)
        try:
            store = await blobs.open_bucket(nc.jetstream())
            settings = replace(frame_config.load({}), work_dir=str(folder))
            extractor = FrameExtractor(nc, store, settings, None, None)
            video_runs = max(1, (runs + 1) // 2)
            print(
                f"frame stage by format (FrameExtractor.extract on real NATS, no scene facts), "
                f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; medians "
                f"(min-max) of {runs} runs a photo, {video_runs} a video\n"
            )
            timed = {}
            for label, path in (("12 MP JPEG", jpeg), ("12 MP HEIC grid", heic)):
                timed[label] = await time_extract(
                    extractor, store, path, MediaKind.IMAGE, runs, scene_facts=False
                )
            base = timed["12 MP JPEG"]
            for label, path in (("12 MP JPEG", jpeg), ("12 MP HEIC grid", heic)):
                t = timed[label]
                ratio = f"{t.ms / base.ms:.2f}x"
                note = (
                    ""
                    if t is base
                    else f"goal <= {RATIO_GOAL}x: {_verdict(t.ms / base.ms, RATIO_GOAL)}"
                )
                _row(f"{label}, {path.stat().st_size / 1e6:.1f} MB", t.ms, t.spread, ratio, note)

            clips = {
                label: await time_extract(
                    extractor, store, path, MediaKind.VIDEO, video_runs, scene_facts=False
                )
                for label, path in made.items()
            }
            first = clips["MP4 (H.264)"]
            for label, path in made.items():
                t = clips[label]
                times = t.ms / first.ms
                note = ""
                if label.startswith("MOV (H.264"):
                    note = f"goal <= {RATIO_GOAL}x: {_verdict(times, RATIO_GOAL)}"
                name = f"{VIDEO_SECONDS} s 1080p {label}, {path.stat().st_size / 1e6:.0f} MB"
                _row(name, t.ms, t.spread, f"{times:.2f}x", note)

            t = await time_extract(extractor, store, big, MediaKind.IMAGE, runs, scene_facts=False)
            fetch, decode = await time_parts(
                store, big, lambda copy: prepare_image(copy, settings.bounds), runs
            )
            note = f"goal <= {BIG_PHOTO_GOAL_MS:.0f} ms: {_verdict(t.ms, BIG_PHOTO_GOAL_MS)}"
            _row(f"24 MP JPEG, {big.stat().st_size / 1e6:.1f} MB", t.ms, t.spread, "", note)
            print(f"{'':<38}of it: fetch from the bucket {fetch:.0f} ms, decode {decode:.0f} ms")
            await time_display_p3(extractor, store, picture, base, runs)
            await time_animations(extractor, store, runs)
        finally:
            await nc.close()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs per photo measurement")
    asyncio.run(main(parser.parse_args().runs))
