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

Run: make bench   (or, from the repository root: .venv/bin/python -m bench.offline --runs 3)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import httpx
import nats
import uvicorn
from nats.aio.client import Client

from bus import blobs, rpc
from contracts.messages import ExtractFrames, MediaKind
from contracts.subjects import EXTRACT_FRAMES
from devstack.media import sample_photo, write_speech_video
from devstack.nats_server import NatsServer
from devstack.processes import free_port
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from gateway import config as gateway_config
from gateway.app import create_app
from llm import engine
from llm.chat import ChatModel
from llm.engine import EngineSettings
from llm.llama_chat import LlamaChat, default_threads
from llm.local_model import default_model_path
from llm.provider import build_chat
from story_service import config as story_config
from story_service.service import start_service as start_story
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation
from translation_service.translate import thai_share

PIPELINES = ("before", "after")
DESCRIPTIONS = {
    "before": "two LlamaChat in process, the story translated once written",
    "after": "one llama-server engine, paragraphs translated as they are written",
}
# Photos of no other measure, so that no request finds its prompt in a model's cache.
WARM_UP_PHOTO = "hubble_deep_field.jpg"
SINGLE_PHOTOS = ("chelsea.png", "camera.png", "rocket.jpg", "coins.png", "moon.png")
PHOTOS_AT_ONCE = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png")
# About 9 s of speech in espeak-ng's default English voice: a 10.0 s clip with the padding.
SPEECH = (
    "The red lighthouse keeper feeds seven orange cats every morning, then climbs the "
    "spiral stairs to polish the great lamp while the boats come home across the quiet sea."
)
# The goals.
GOAL_PHOTO = 45.0
GOAL_FIRST_WORDS = 8.0
GOAL_VIDEO = 70.0
GOAL_AT_ONCE = 2.5
GOAL_THAI_SHARE = 0.95
TIMEOUT = httpx.Timeout(900.0)
UPLOAD_CHUNK = 64 * 1024
PREVIEW = 200
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile")

Cell = tuple[float, str, bool | None]  # value, as printed, goal met (None: not measured)


@dataclass
class Answer:
    """One POST /analyze/stream, timed by the client as its events arrive."""

    media: str
    elapsed: float = math.nan  # seconds from the request's start to the stream's end
    # Seconds from the end of the upload to the first `story` event, to the last one,
    # to the `translating` stage (the first translation call started) and to the first
    # `thai` event.
    first_words: float = math.nan
    last_words: float = math.nan
    translating: float = math.nan
    first_thai: float = math.nan
    english: str = ""
    thai: str = ""
    warnings: list[str] = field(default_factory=list)
    input_tokens: int = 0  # the result's token_usage: every model call it took, retries too
    output_tokens: int = 0
    error: str | None = None

    @property
    def total(self) -> float:
        """Seconds from the request's start to its result; NaN if it failed."""
        return math.nan if self.error else self.elapsed


@dataclass
class Memory:
    """Where the model lives, and the RSS (MiB, by /proc status field) that shows it."""

    in_process: int  # LlamaChat instances in this process
    bench_growth: dict[str, float]  # this process, from before the models loaded to the end
    bench_growth_at_load: dict[str, float]
    engine_pid: int | None = None
    engine_children: int = 0
    engine_at_load: dict[str, float] = field(default_factory=dict)
    engine_at_end: dict[str, float] = field(default_factory=dict)

    @property
    def copies(self) -> int:
        """Copies of the model loaded: one per LlamaChat, one for the engine."""
        return self.in_process + (1 if self.engine_pid else 0)

    @property
    def model_mib(self) -> float:
        """The engine's RSS at the end, else how much this process's RSS grew."""
        return (self.engine_at_end if self.engine_pid else self.bench_growth)["VmRSS"]


@dataclass
class Figures:
    """What one pipeline measured."""

    pipeline: str
    model: str
    warm_up: Answer
    singles: list[Answer]
    video: Answer | None
    at_once: list[Answer]
    at_once_wall: float
    memory: Memory


@dataclass
class Stack:
    """One pipeline's running parts, and this process's memory before and after its models."""

    client: httpx.AsyncClient
    chats: list[ChatModel]
    engine_process: subprocess.Popen[bytes] | None
    bench_before: dict[str, float]
    bench_at_load: dict[str, float]
    engine_at_load: dict[str, float]

    def memory(self) -> Memory:
        """The memory figures as they stand now."""
        memory = Memory(
            in_process=sum(isinstance(chat, LlamaChat) for chat in self.chats),
            bench_growth=growth(self.bench_before, memory_mib(os.getpid())),
            bench_growth_at_load=growth(self.bench_before, self.bench_at_load),
        )
        if self.engine_process is not None:
            pid = self.engine_process.pid
            memory.engine_pid = pid
            memory.engine_children = len(
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            )
            memory.engine_at_load = self.engine_at_load
            memory.engine_at_end = memory_mib(pid)
        return memory


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of process `pid` in MiB, from /proc/<pid>/status."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in MEMORY_FIELDS:
            found[name] = int(value.split()[0]) / 1024  # kB
    return found


def growth(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """How much each memory figure grew from `before` to `after`."""
    return {name: after[name] - before[name] for name in MEMORY_FIELDS}


def median(values: Sequence[float]) -> float:
    """The median of the finite `values` (NaN marks a failed answer); NaN if none."""
    finite = [value for value in values if math.isfinite(value)]
    return statistics.median(finite) if finite else math.nan


class TimedUpload:
    """A request body sent in chunks, noting when its last byte went to the socket."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent_at = math.nan  # time.perf_counter()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), UPLOAD_CHUNK):
            yield self.body[start : start + UPLOAD_CHUNK]
        # httpx asks for the next chunk only once it has written the last one.
        self.sent_at = time.perf_counter()


def multipart(path: Path) -> tuple[bytes, str]:
    """The multipart form of a one-file upload of `path`, and its Content-Type."""
    form = httpx.Request(
        "POST",
        "http://bench/",
        files=[("files", (path.name, path.read_bytes(), "application/octet-stream"))],
    )
    return form.read(), form.headers["Content-Type"]


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """The (event, data) pairs of a Server-Sent Events response, as each arrives."""
    kind, data = "", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line:
            if kind:
                yield kind, json.loads("\n".join(data) or "null")
            kind, data = "", []


async def analyze(client: httpx.AsyncClient, path: Path) -> Answer:
    """POST `path` to /analyze/stream and time its events."""
    body, content_type = multipart(path)
    upload = TimedUpload(body)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    answer = Answer(path.name)
    started = time.perf_counter()
    answer.error = "the stream ended without a result"  # until its `result` event
    async with client.stream("POST", "/analyze/stream", content=upload, headers=headers) as reply:
        if reply.status_code == 200:
            async for kind, data in sse_events(reply):
                note(answer, kind, data, time.perf_counter() - upload.sent_at)
        else:
            await reply.aread()
            answer.error = f"HTTP {reply.status_code}: {reply.text[:200]}"
    answer.elapsed = time.perf_counter() - started
    return answer


def note(answer: Answer, kind: str, data: Any, since_upload: float) -> None:
    """Record one event of `answer`'s stream, which came `since_upload` seconds after the
    end of the upload."""
    if kind == "story":
        if math.isnan(answer.first_words):
            answer.first_words = since_upload
        answer.last_words = since_upload
    elif kind == "stage" and data["stage"] == "translating":
        answer.translating = since_upload
    elif kind == "thai" and math.isnan(answer.first_thai):
        answer.first_thai = since_upload
    elif kind == "result":
        answer.english, answer.thai = data["english"], data["thai"]
        answer.warnings = data["warnings"]
        answer.input_tokens = data["token_usage"]["input_tokens"]
        answer.output_tokens = data["token_usage"]["output_tokens"]
        answer.error = None
    elif kind == "error":
        answer.error = f"{data['status']}: {data['detail']}"


async def at_once(client: httpx.AsyncClient, photos: Sequence[Path]) -> tuple[list[Answer], float]:
    """All `photos` sent at once, one request each; the answers and the wall seconds."""
    started = time.perf_counter()
    answers = await asyncio.gather(*(analyze(client, photo) for photo in photos))
    return list(answers), time.perf_counter() - started


async def warm_frames(nc: Client, media: Sequence[tuple[Path, MediaKind]]) -> None:
    """Extract frames from each of `media` once, so that the frame service has loaded its
    models (classifier, OCR, transcription) before this process's memory is measured."""
    store = await blobs.open_bucket(blobs.jetstream(nc))
    for number, (path, kind) in enumerate(media):
        name = f"bench/warm-{number}"
        await blobs.put_file(store, name, path)
        request = ExtractFrames(request_id="bench-warm", upload=name, kind=kind)
        extracted = await rpc.call(nc, EXTRACT_FRAMES, request, timeout=300)
        await blobs.delete_quietly(store, [name] + [frame.object for frame in extracted.frames])


async def wait_ready(client: httpx.AsyncClient, serving: asyncio.Task[None]) -> None:
    """Return once the gateway's /readyz says NATS and every service answer."""
    deadline = time.monotonic() + 120
    while True:
        if serving.done():
            serving.result()  # raises what stopped it
            raise RuntimeError("the gateway stopped while starting")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway was not ready within 120 s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def serving_gateway(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway app, served by uvicorn on a free port in this event loop; yields a
    client for it. (devstack.gateway's client goes through httpx's ASGITransport,
    which hands a response over only once it is complete: no event could be timed.)"""
    port = free_port()
    app = create_app(replace(gateway_config.load({}), nats_url=nats_url))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT
        ) as client:
            await wait_ready(client, serving)
            yield client
    finally:
        server.should_exit = True
        await serving


@contextlib.asynccontextmanager
async def running_stack(
    pipeline: str, scratch: Path, warm_media: Sequence[tuple[Path, MediaKind]]
) -> AsyncIterator[Stack]:
    """NATS, the three services (for "after", on a new engine) and the gateway; on leaving,
    all stopped and the models freed."""
    (scratch / pipeline).mkdir()
    bus = NatsServer(scratch / pipeline).start()
    nc = await nats.connect(bus.url)
    services, chats = [], []
    engine_process = None
    try:
        env = {"NATS_URL": bus.url}
        services.append(await start_frames(nc, frame_config.load(env)))
        await warm_frames(nc, warm_media)
        bench_before = memory_mib(os.getpid())
        if pipeline == "after":
            settings = EngineSettings(port=free_port())
            log_file = scratch / pipeline / "engine.log"
            engine_process = await asyncio.to_thread(engine.start, settings, log_file=log_file)
            env["IMGSTORY_LOCAL_SERVER_URL"] = settings.url
        story, translation = story_config.load(env), translation_config.load(env)
        # Each service its own model, as each builds it when started on its own.
        chats.append(await asyncio.to_thread(build_chat, story.model))
        chats.append(await asyncio.to_thread(build_chat, translation.model))
        services.append(await start_story(nc, story, chat=chats[0]))
        services.append(await start_translation(nc, translation, chat=chats[1]))
        bench_at_load = memory_mib(os.getpid())
        engine_at_load = memory_mib(engine_process.pid) if engine_process else {}
        async with serving_gateway(bus.url) as client:
            yield Stack(client, chats, engine_process, bench_before, bench_at_load, engine_at_load)
    finally:
        for service in reversed(services):
            await service.stop()
        await nc.drain()
        for chat in chats:
            if isinstance(chat, LlamaChat):
                await asyncio.to_thread(chat.close)
        if engine_process is not None:
            await asyncio.to_thread(engine.stop, engine_process)
        bus.stop()


async def measure(
    pipeline: str, scratch: Path, runs: int, video: Path | None, together: bool
) -> Figures:
    """Run one pipeline's stack and take its measures."""
    warm_up_photo = sample_photo(WARM_UP_PHOTO)
    photos = [sample_photo(SINGLE_PHOTOS[run % len(SINGLE_PHOTOS)]) for run in range(runs)]
    warm_media = [(warm_up_photo, MediaKind.IMAGE)]
    if video:
        warm_media.append((video, MediaKind.VIDEO))
    print(f"{pipeline}: starting ({DESCRIPTIONS[pipeline]}) ...", flush=True)
    async with running_stack(pipeline, scratch, warm_media) as stack:
        warm_up = await analyze(stack.client, warm_up_photo)
        progress(pipeline, "warm-up", [warm_up])
        singles = []
        for number, photo in enumerate(photos, 1):
            singles.append(await analyze(stack.client, photo))
            progress(pipeline, f"photo run {number}", singles[-1:])
        video_answer = await analyze(stack.client, video) if video else None
        if video_answer:
            progress(pipeline, "video", [video_answer])
        answers: list[Answer] = []
        wall = math.nan
        if together:
            answers, wall = await at_once(
                stack.client, [sample_photo(name) for name in PHOTOS_AT_ONCE]
            )
            progress(pipeline, f"{len(answers)} at once, {wall:.1f} s for all", answers)
        memory = stack.memory()
        model = stack.chats[0].name
    print(f"{pipeline}: done", flush=True)
    return Figures(pipeline, model, warm_up, singles, video_answer, answers, wall, memory)


def progress(pipeline: str, measure: str, answers: Sequence[Answer]) -> None:
    """One line as a measure ends: a full run takes many minutes."""
    ended = ", ".join(
        f"{answer.media} {'FAILED' if answer.error else 'in'} {answer.elapsed:.1f} s"
        for answer in answers
    )
    print(f"{pipeline}: {measure}: {ended}", flush=True)


def seconds_cell(seconds: float, goal: float) -> Cell:
    """`seconds` against `goal`; NaN, when no answer gave the figure, as "failed"."""
    if math.isnan(seconds):
        return seconds, "failed", False
    return seconds, f"{seconds:.1f} s", seconds <= goal


def photo_cell(figures: Figures) -> Cell:
    return seconds_cell(median([answer.total for answer in figures.singles]), GOAL_PHOTO)


def first_words_cell(figures: Figures) -> Cell:
    seconds = median([answer.first_words for answer in figures.singles])
    return seconds_cell(seconds, GOAL_FIRST_WORDS)


def video_cell(figures: Figures) -> Cell:
    if figures.video is None:
        return math.nan, "skipped", None
    return seconds_cell(figures.video.total, GOAL_VIDEO)


def at_once_cell(figures: Figures) -> Cell:
    if not figures.at_once:
        return math.nan, "skipped", None
    wall = figures.at_once_wall
    ratio = wall / median([answer.total for answer in figures.singles])
    if any(answer.error for answer in figures.at_once) or math.isnan(ratio):
        return wall, f"{wall:.0f} s, failed", False
    return wall, f"{wall:.0f} s = {ratio:.1f}x", ratio <= GOAL_AT_ONCE


def memory_cell(figures: Figures) -> Cell:
    memory = figures.memory
    mib = memory.model_mib
    size = f"{mib:.0f} MiB" if memory.engine_pid else f"+{mib:.0f} MiB"
    copies = f"{memory.copies} cop{'y' if memory.copies == 1 else 'ies'}"
    return mib, f"{copies}, {size}", memory.copies == 1


ROWS: tuple[tuple[str, Callable[[Figures], Cell], str], ...] = (
    ("1. photo -> EN+TH, median total", photo_cell, f"<= {GOAL_PHOTO:.0f} s"),
    ("2. first English words, median", first_words_cell, f"<= {GOAL_FIRST_WORDS:.0f} s"),
    ("3. 10 s speech video -> EN+TH", video_cell, f"<= {GOAL_VIDEO:.0f} s"),
    ("4. 4 photos at once, wall / alone", at_once_cell, f"<= {GOAL_AT_ONCE}x"),
    ("5. model copies in memory, RSS", memory_cell, "one copy"),
)


def ratio_text(before: Cell | None, after: Cell | None) -> str:
    """after / before, when both pipelines measured the figure."""
    if before is None or after is None or not before[0] or not after[0]:
        return "-"
    ratio = after[0] / before[0]
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "-"


def met_text(cell: Cell | None) -> str:
    """yes / no for a cell's goal; "-" when it was not measured."""
    if cell is None or cell[2] is None:
        return "-"
    return "yes" if cell[2] else "no"


def print_table(figures: dict[str, Figures]) -> None:
    """The five measures: before | after | after/before | goal | met? (before, after)."""
    print(
        f"\n{'measure':<36}{'before':>20}{'after':>20}{'after/before':>14}  {'goal':<10}met? (before, after)"
    )
    for label, cell_of, goal in ROWS:
        before, after = (cell_of(figures[p]) if p in figures else None for p in PIPELINES)
        print(
            f"{label:<36}{before[1] if before else '-':>20}{after[1] if after else '-':>20}"
            f"{ratio_text(before, after):>14}  {goal:<10}{met_text(before)}, {met_text(after)}"
        )


def answer_line(label: str, answer: Answer) -> str:
    """One answer's timings, Thai script share and warnings."""
    if answer.error:
        return f"  {label} {answer.media}: FAILED after {answer.elapsed:.1f} s: {answer.error}"
    share = thai_share(answer.thai)
    warnings = "; ".join(answer.warnings) or "none"
    return (
        f"  {label} {answer.media}: total {answer.total:.1f} s; from the upload's end: English "
        f"{answer.first_words:.1f}-{answer.last_words:.1f} s, translating from "
        f"{answer.translating:.1f} s, Thai from {answer.first_thai:.1f} s; "
        f"tokens {answer.input_tokens} in, {answer.output_tokens} out; Thai script {share:.0%} (>= 95 %: {'yes' if share >= GOAL_THAI_SHARE else 'NO'}); "
        f"warnings: {warnings}"
    )


def memory_lines(memory: Memory) -> list[str]:
    """The memory figures in full."""
    grown, at_load = memory.bench_growth, memory.bench_growth_at_load
    lines = [
        f"  this process: {memory.in_process} LlamaChat; its RSS grew {at_load['VmRSS']:+.0f} MiB "
        f"by the models' loading and {grown['VmRSS']:+.0f} MiB by the end "
        f"(anonymous {grown['RssAnon']:+.0f}, file-backed {grown['RssFile']:+.0f})"
    ]
    if memory.engine_pid:
        end = memory.engine_at_end
        lines.append(
            f"  engine: 1 process (pid {memory.engine_pid}, {memory.engine_children} child "
            f"processes), RSS {memory.engine_at_load['VmRSS']:.0f} MiB after loading, "
            f"{end['VmRSS']:.0f} MiB at the end (anonymous {end['RssAnon']:.0f}, "
            f"file-backed {end['RssFile']:.0f})"
        )
    return lines


def print_details(figures: Figures) -> None:
    """Each answer of one pipeline, its memory, and the first words of one story."""
    print(f"\n{figures.pipeline}: {DESCRIPTIONS[figures.pipeline]}; model {figures.model}")
    print(answer_line("warm-up (not counted)", figures.warm_up))
    for number, answer in enumerate(figures.singles, 1):
        print(answer_line(f"photo run {number}", answer))
    if figures.video:
        print(answer_line("video", figures.video))
    for answer in figures.at_once:
        print(answer_line("at once", answer))
    for line in memory_lines(figures.memory):
        print(line)
    answered = [answer for answer in (*figures.singles, figures.warm_up) if not answer.error]
    if answered:
        print(f"  English, first {PREVIEW} characters: {answered[0].english[:PREVIEW]!r}")
        print(f"  Thai, first {PREVIEW} characters: {answered[0].thai[:PREVIEW]!r}")
    else:
        print("  no photo was answered: no story to show")


def clip_seconds(path: Path) -> float:
    """The length of the media file at `path`."""
    with av.open(str(path)) as container:
        return (container.duration or 0) / av.time_base


def save_answers(path: Path, figures: dict[str, Figures]) -> None:
    """Every answer of every pipeline, as JSON at `path`: which run, the media, the
    seconds, the English, the Thai and the warnings."""
    rows = []
    for result in figures.values():
        labelled = [("warm-up", result.warm_up)]
        labelled += [(f"photo run {n}", a) for n, a in enumerate(result.singles, 1)]
        labelled += [("video", result.video)] if result.video else []
        labelled += [("at once", a) for a in result.at_once]
        for label, answer in labelled:
            rows.append(
                {
                    "pipeline": result.pipeline,
                    "run": label,
                    "media": answer.media,
                    "seconds": None if math.isnan(answer.total) else round(answer.total, 1),
                    "english": answer.english,
                    "thai": answer.thai,
                    "warnings": answer.warnings,
                    "tokens": [answer.input_tokens, answer.output_tokens],
                    "error": answer.error,
                }
            )
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"answers written to {path}")


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
