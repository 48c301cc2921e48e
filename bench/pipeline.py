"""Benchmark the embedded offline default on this machine.

Prints, side by side from one run:
  1. warm latency per stage (frames, story, translation) for one photo and one 5 s video,
     through the real gateway, NATS and services;
  2. the overhead of the story service over calling llama.cpp directly for the same
     tokens (greedy decoding, so both produce the identical answer).

Run: make bench   (or, from the repository root: .venv/bin/python -m bench.pipeline --runs 3)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nats

from contracts import blobs, rpc
from contracts.messages import ExtractFrames, MediaKind, StoryWritten, WriteStory
from contracts.subjects import EXTRACT_FRAMES, WRITE_STORY
from frame_service import config as frame_config
from frame_service.service import start_service as start_frames
from gateway import config as gateway_config
from llm.provider import build_chat
from story_service import config as story_config
from story_service.service import StoryWriter
from story_service.service import start_service as start_story
from story_service.story import build_sheet_messages
from tests.media import sample_photo, sample_video
from tests.support.gateway import gateway_client
from tests.support.nats_server import NatsServer
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def stage_latency(url: str, path: Path, runs: int) -> dict[str, float]:
    settings = replace(gateway_config.load({}), nats_url=url)
    timings: dict[str, list[float]] = {"frames": [], "story": [], "translation": [], "total": []}
    async with gateway_client(settings) as client:
        for run in range(runs + 1):  # the first run warms caches and is not counted
            response = await client.post(
                "/analyze/",
                files=[("files", (path.name, path.read_bytes(), "application/octet-stream"))],
            )
            response.raise_for_status()
            if run:
                for stage, ms in response.json()["timings_ms"].items():
                    timings[stage].append(ms)
    return {stage: median(values) for stage, values in timings.items()}


async def story_overhead(nc, store, chat, settings, runs: int) -> tuple[float, float, int]:
    """(service ms, direct ms, output tokens) for the same story request, medians."""
    photo = sample_photo("chelsea.png")
    await blobs.put_file(store, "bench/upload-0", photo)
    extracted = await rpc.call(
        nc,
        EXTRACT_FRAMES,
        ExtractFrames(request_id="bench", upload="bench/upload-0", kind=MediaKind.IMAGE),
        timeout=120,
    )
    request = WriteStory(request_id="bench", frames=extracted.frames)
    writer = StoryWriter(nc, chat, store, settings)
    service_ms, direct_ms, tokens = [], [], set()
    for run in range(runs + 1):
        started = time.perf_counter()
        reply = await rpc.call(nc, WRITE_STORY, request, timeout=600)
        service = time.perf_counter() - started
        assert isinstance(reply, StoryWritten), reply
        # Direct: the same frames and facts, the same messages, the same model instance.
        frames = await writer.frames_of(request)
        messages = build_sheet_messages(frames, None, None)
        started = time.perf_counter()
        completion = await chat.complete(
            messages, max_tokens=settings.max_tokens, temperature=settings.temperature
        )
        direct = time.perf_counter() - started
        if completion.output_tokens != reply.usage.output_tokens:
            sys.exit("the direct call produced other tokens than the service: not comparable")
        tokens.add(completion.output_tokens)
        if run:
            service_ms.append(service * 1000)
            direct_ms.append(direct * 1000)
    await blobs.delete_quietly(store, ["bench/upload-0"] + [f.object for f in extracted.frames])
    return median(service_ms), median(direct_ms), tokens.pop()


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            env = {"NATS_URL": server.url}
            frames = frame_config.load(env)
            story = replace(story_config.load(env), temperature=0.0)  # greedy: repeatable tokens
            translation = replace(translation_config.load(env), temperature=0.0)
            nc = await nats.connect(server.url)
            chat = await asyncio.to_thread(build_chat, story.model)
            services = [
                await start_frames(nc, frames),
                await start_story(nc, story, chat=chat),
                await start_translation(nc, translation, chat=chat),
            ]
            store = await blobs.open_bucket(nc.jetstream())
            print(f"model: {chat.name}; {runs} warm run(s) each, medians\n")
            print(
                f"{'input':<28}{'frames ms':>11}{'story ms':>11}{'translate ms':>14}{'total ms':>11}"
            )
            for label, path in (
                ("photo chelsea.png", sample_photo("chelsea.png")),
                ("video bigbuckbunny.mp4 5.3s", sample_video("bigbuckbunny.mp4")),
            ):
                t = await stage_latency(server.url, path, runs)
                print(
                    f"{label:<28}{t['frames']:>11.0f}{t['story']:>11.0f}"
                    f"{t['translation']:>14.0f}{t['total']:>11.0f}"
                )
            service_ms, direct_ms, tokens = await story_overhead(nc, store, chat, story, runs)
            overhead = service_ms / direct_ms - 1
            print(
                f"\nstory, {tokens} output tokens: service {service_ms:.0f} ms, "
                f"llama.cpp direct {direct_ms:.0f} ms, overhead {overhead:+.1%} (goal <= 10%)"
            )
            for service in services:
                await service.stop()
            await nc.drain()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="warm runs per measurement")
    asyncio.run(main(parser.parse_args().runs))
