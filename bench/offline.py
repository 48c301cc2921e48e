"""Benchmark the offline default before and after the engine, warm, on this machine.

"before": the story and translation services each load their own copy of the model in
this process (llama.cpp through LlamaChat, one generation at a time), and the gateway
translates the story once it is written. "after": one llama.cpp llama-server (llm.engine:
4 slots, a thread per core) serves both services through IMGSTORY_LOCAL_SERVER_URL, and
the gateway translates each paragraph as soon as it is written.

Each pipeline runs alone: NATS, the three services and the gateway with their default
settings, the services in this process, the gateway served by uvicorn on a local port so
that the Server-Sent Events of POST /analyze/stream arrive as they are sent. One stack is
stopped and its models freed before the other starts. After one warm-up request (not
counted) it measures, next to the issue's goals:

  1. one photo -> English + Thai: median total seconds over --runs (<= 45 s), a different
     photo each run (chelsea.png, camera.png, rocket.jpg, ...): both pipelines keep the
     last prompts they read, and a photo sent again would find its prompt read already;
  2. first English words: from the end of the upload (the request's last byte handed to
     the socket) to the first `story` event, median over the same runs (<= 8 s);
  3. one 10 s video with speech (espeak-ng) -> English + Thai: total seconds (<= 70 s);
  4. 4 one-photo requests at once (4 different photos): wall seconds for all 4, and its
     ratio to one request alone (the median of 1.) (<= 2.5x);
  5. model copies in memory: before, the LlamaChat instances in this process and how much
     its RSS grew from loading them to the end of the run (the frame service's models are
     loaded before, so they are not counted); after, the engine's process and its RSS.

Then, per pipeline, each answer's timings, Thai script share (>= 95 %) and warnings, and
the first 200 characters of one English and one Thai story.

Options: --runs N (3), --only before|after|both (both), --skip-video, --skip-concurrent,
--answers FILE (every answer's full English, Thai and warnings as JSON, to compare them).
A full run takes 20-30 minutes on 2 cores.

bench.offline_pipelines runs the two stacks, bench.offline_client times each request and
bench.offline_report prints the figures.

Run: make bench   (or, from the repository root: .venv/bin/python -m bench.offline --runs 3)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import av

from bench.offline_pipelines import PIPELINES, measure
from bench.offline_report import print_details, print_table, save_answers
from devstack.media import write_speech_video
from llm import engine
from llm.engine import EngineSettings
from llm.llama_chat import default_threads
from llm.local_model import default_model_path

# About 9 s of speech in espeak-ng's default English voice: a 10.0 s clip with the padding.
SPEECH = (
    "The red lighthouse keeper feeds seven orange cats every morning, then climbs the "
    "spiral stairs to polish the great lamp while the boats come home across the quiet sea."
)


def clip_seconds(path: Path) -> float:
    """The length of the media file at `path`."""
    with av.open(str(path)) as container:
        return (container.duration or 0) / av.time_base


async def main(
    runs: int,
    pipelines: Sequence[str],
    with_video: bool,
    together: bool,
    answers: Path | None = None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="imgstory-bench-offline-") as tmp:
        scratch = Path(tmp)
        video = write_speech_video(scratch / "speech.mp4", SPEECH) if with_video else None
        print(
            f"offline default, warm, {runs} run(s) of measure 1-2; {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at the start"
        )
        print("first words are timed from the end of the upload (its last byte sent)")
        model = default_model_path()
        print(
            f"model file {model.name}: {model.stat().st_size / 2**20:.0f} MiB, memory-mapped "
            "(its pages count as file-backed RSS in each process, for each mapping)"
        )
        if "after" in pipelines:
            print(
                f"after's engine: {engine.binary_path()}, {EngineSettings.slots} slots, "
                f"{default_threads()} threads"
            )
        if video:
            print(f"video: {clip_seconds(video):.1f} s, espeak-ng saying {SPEECH!r}")
        figures = {}
        for pipeline in pipelines:
            figures[pipeline] = await measure(pipeline, scratch, runs, video, together)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print_table(figures)
    for result in figures.values():
        print_details(result)
    if answers is not None:
        save_answers(answers, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm runs of measures 1 and 2 (3)")
    parser.add_argument("--only", choices=("before", "after", "both"), default="both")
    parser.add_argument("--skip-video", action="store_true", help="leave out measure 3")
    parser.add_argument("--skip-concurrent", action="store_true", help="leave out measure 4")
    parser.add_argument("--answers", type=Path, help="write every answer to this JSON file")
    args = parser.parse_args()
    chosen = PIPELINES if args.only == "both" else (args.only,)
    asyncio.run(
        main(args.runs, chosen, not args.skip_video, not args.skip_concurrent, args.answers)
    )
