"""The two pipelines bench.offline compares, each run as a stack of its own, and what one
run of either measures: the answers of bench.offline_client and the model's memory."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import nats
import uvicorn
from nats.aio.client import Client

from bench.offline_client import Answer, analyze, at_once
from bus import blobs, rpc
from contracts.messages import ExtractFrames, MediaKind
from contracts.subjects import EXTRACT_FRAMES
from devstack.media import sample_photo
from devstack.nats_server import NatsServer
from devstack.processes import ProcessGroup, free_port
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from gateway import config as gateway_config
from gateway.app import create_app
from llm import engine
from llm.chat import ChatModel
from llm.engine import EngineSettings
from llm.llama_chat import LlamaChat
from llm.provider import build_chat
from story_service import config as story_config
from story_service.service import start_service as start_story
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation

PIPELINES = ("before", "after")
DESCRIPTIONS = {
    "before": "two LlamaChat in process, the story translated once written",
    "after": "one llama-server engine, paragraphs translated as they are written",
}
# Photos of no other measure, so that no request finds its prompt in a model's cache.
WARM_UP_PHOTO = "hubble_deep_field.jpg"
SINGLE_PHOTOS = ("chelsea.png", "camera.png", "rocket.jpg", "coins.png", "moon.png")
PHOTOS_AT_ONCE = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png")
TIMEOUT = httpx.Timeout(900.0)
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile")


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
    engine_process: subprocess.Popen[Any] | None
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
    engines = ProcessGroup(grace=10)
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
            started = await asyncio.to_thread(engine.start, settings, log_file=log_file)
            engine_process = engines.adopt("llama-server", started)
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
        await asyncio.to_thread(engines.stop)
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
