"""Time N concurrent one-photo requests through the real stack against a provider of fixed latency.

Every part runs as its own process, as in production: a nats-server, the fake
OpenAI-compatible provider (devstack/fake_openai.py) answering every chat call
after a fixed latency, the frame, story and translation services and the gateway,
all with their default settings and the provider `openai`. After one warm-up request
it fires N one-photo POST /analyze/ requests at once (a 1920x1080 quality-90 JPEG made
from scikit-image's astronaut) and prints, next to the goals of issue 11:

  - wall time for all N, as a ratio to the floor (two sequential provider calls per
    request), and against the seed prototype's 34.3 s for 32;
  - the most provider calls in flight at once, and provider calls per request;
  - gpt-4.1-mini image tokens (llm/image_tokens.py) and bytes per image sent;
  - the median of each request's timings_ms and the frame stage's share of its total;
  - the gateway's own overhead on one request alone: client wall time minus the time
    the provider held a call minus the frame stage, median over sequential requests.

Options: --requests N (32), --latency S (1.0), --singles K (10), --photo PATH to send
your own photo, and --env KEY=VALUE (repeatable) to give every service and the gateway a
setting, e.g. --env IMGSTORY_STORY_IN_FLIGHT=32. The machine's load average is printed
too: on a shared machine the frame stage's figures move with it.

Run: make bench-concurrency   (or: .venv/bin/python -m bench.concurrency --requests 32)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench import stacks
from bench.stacks import TOKEN_MODEL
from devstack.fake_openai import RESET_PATH, STATS_PATH
from devstack.media import sample_photo
from devstack.nats_server import NatsServer
from devstack.processes import ROOT, ProcessGroup
from llm.image_tokens import image_tokens

PHOTO_SIZE = (1920, 1080)
# Issue 11's goals, for 32 requests and a 1.0 s provider.
SEED_SECONDS = 34.3  # the seed's synchronous prototype, measured
GOAL_RATIO = 1.2  # 2.4 s over the 2.0 s floor
GOAL_SPEEDUP = 14.0
GOAL_FRAMES_MS = 60.0
GOAL_TOKENS = 829
GOAL_KB = 310.0
GOAL_OVERHEAD_MS = 30.0


@dataclass
class Answer:
    status: int
    seconds: float
    timings_ms: dict[str, float]


def write_photo(path: Path) -> bytes:
    """Write a 1920x1080 quality-90 JPEG of the astronaut (cropped to 16:9, scaled up)."""
    with Image.open(sample_photo("astronaut.png")) as source:
        img = source.convert("RGB")
    width, height = img.size
    crop = round(width * PHOTO_SIZE[1] / PHOTO_SIZE[0])
    top = (height - crop) // 2
    img = img.crop((0, top, width, top + crop)).resize(PHOTO_SIZE, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def cpu_seconds(stack: ProcessGroup) -> dict[str, float]:
    """CPU seconds (user + system) each process of `stack` has used so far; {} off Linux."""
    used = {}
    for name, process in stack.processes.items():
        seconds = _process_cpu(process.pid)
        if seconds is not None:
            used[name] = seconds
    return used


def _process_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are the 14th and 15th fields; the split dropped pid and comm.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def running_stack(
    tmp: Path, latency: float, extra: dict[str, str]
) -> AsyncIterator[tuple[str, str, ProcessGroup, NatsServer]]:
    """NATS, the fake provider, the services and the gateway, ready; yields (gateway URL,
    fake URL, the processes, NATS). Each process's output is in tmp/stack/logs/<name>.log."""
    async with stacks.running_stack("stack", tmp, ROOT, latency, extra) as stack:
        await wait_ready(stack.url, stack.processes)
        yield stack.url, stack.fake_url, stack.processes, stack.bus


async def wait_ready(url: str, stack: ProcessGroup, timeout: float = 120) -> None:
    """Return once the gateway's /readyz says NATS and every service answer."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            stack.check()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack was not ready within {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def analyze(client: httpx.AsyncClient, photo: bytes) -> Answer:
    started = time.perf_counter()
    response = await client.post("/analyze/", files=[("files", ("photo.jpg", photo, "image/jpeg"))])
    seconds = time.perf_counter() - started
    timings = response.json()["timings_ms"] if response.status_code == 200 else {}
    return Answer(response.status_code, seconds, timings or {})


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


async def main(
    requests: int, latency: float, singles: int, extra: dict[str, str], own_photo: Path | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="imgstory-bench-concurrency-") as scratch:
        tmp = Path(scratch)
        photo = own_photo.read_bytes() if own_photo else write_photo(tmp / "photo.jpg")
        async with running_stack(tmp, latency, extra) as (gateway_url, fake_url, stack, bus):
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with (
                httpx.AsyncClient(base_url=gateway_url, timeout=600, limits=limits) as client,
                httpx.AsyncClient(base_url=fake_url, timeout=30) as fake,
            ):
                warm = await analyze(client, photo)  # loads models and opens connections
                if warm.status != 200:
                    raise RuntimeError(f"the warm-up request answered {warm.status}")

                await fake.post(RESET_PATH)
                load = os.getloadavg()[0]
                cpu_before = burst_cpu(stack, bus)
                started = time.perf_counter()
                answers = await asyncio.gather(*(analyze(client, photo) for _ in range(requests)))
                wall = time.perf_counter() - started
                cpu = {k: v - cpu_before.get(k, 0.0) for k, v in burst_cpu(stack, bus).items()}
                together: dict[str, Any] = (await fake.get(STATS_PATH)).json()

                alone: list[tuple[Answer, float]] = []
                for _ in range(singles):
                    await fake.post(RESET_PATH)
                    answer = await analyze(client, photo)
                    busy = (await fake.get(STATS_PATH)).json()["busy_seconds"]
                    alone.append((answer, busy))
        with Image.open(io.BytesIO(photo)) as img:
            size = f"{img.width}x{img.height} {img.format}"
        photo_note = f"{size}, {len(photo) / 1000:.0f} kB"
        report(requests, latency, photo_note, load, wall, answers, together, alone, cpu)


def burst_cpu(stack: ProcessGroup, bus: NatsServer) -> dict[str, float]:
    """CPU seconds so far of every process of the run, this benchmark's client included."""
    used = cpu_seconds(stack)
    if bus.process is not None and (seconds := _process_cpu(bus.process.pid)) is not None:
        used["nats-server"] = seconds
    times = os.times()
    used["benchmark client"] = times.user + times.system
    return used


def report(
    requests: int,
    latency: float,
    photo: str,
    load: float,
    wall: float,
    answers: list[Answer],
    stats: dict[str, Any],
    alone: list[tuple[Answer, float]],
    cpu: dict[str, float],
) -> None:
    floor = 2 * latency
    ok = [a for a in answers if a.status == 200]
    failed = Counter(a.status for a in answers if a.status != 200)
    images = [i for i in stats["images"] if i["width"] and i["height"]]
    tokens = [
        image_tokens(i["width"], i["height"], TOKEN_MODEL, i["detail"] or "auto") for i in images
    ]
    kb = [i["bytes"] / 1000 for i in images]
    sizes = Counter(f"{i['width']}x{i['height']}" for i in images)
    stage = {
        k: median([a.timings_ms[k] for a in ok])
        for k in ("frames", "story", "translation", "total")
    }
    share = median(
        [a.timings_ms["frames"] / a.timings_ms["total"] for a in ok if a.timings_ms["total"]]
    )
    singles = [a for a, _ in alone if a.status == 200]
    frames_alone = median([a.timings_ms["frames"] for a in singles])
    overhead = [
        a.seconds * 1000 - busy * 1000 - a.timings_ms["frames"]
        for a, busy in alone
        if a.status == 200
    ]
    inside = [
        a.timings_ms["total"] - busy * 1000 - a.timings_ms["frames"]
        for a, busy in alone
        if a.status == 200
    ]

    print(f"{requests} concurrent one-photo requests ({photo}), provider latency {latency:.1f} s")
    print(f"load average before the burst: {load:.1f} on {os.cpu_count()} cores")
    print(f"answers: {len(ok)} x 200" + "".join(f", {n} x {s}" for s, n in sorted(failed.items())))
    print()
    print(f"{'figure':<44}{'measured':>14}  goal")
    rows = [
        ("wall time for all", f"{wall:.1f} s", f"<= {GOAL_RATIO * floor:.1f} s ({verdict(wall <= GOAL_RATIO * floor)})"),
        (f"ratio to the floor ({floor:.1f} s: 2 calls x {latency:.1f} s)", f"{wall / floor:.1f}x", f"<= {GOAL_RATIO:.1f}x"),
        (f"speed-up over the seed's {SEED_SECONDS} s for 32", f"{SEED_SECONDS / wall:.1f}x", f">= {GOAL_SPEEDUP:.0f}x ({verdict(SEED_SECONDS / wall >= GOAL_SPEEDUP)})" if requests == 32 else "(compares 32 requests only)"),
        ("provider calls in flight, most at once", f"{stats['max_in_flight']}", f"{requests}: one per request, up to configured caps"),
        ("provider calls per request", f"{stats['chat_calls'] / requests:.1f}", ""),
        (f"{TOKEN_MODEL} image tokens per image", f"{median(tokens):.0f}", f"<= {GOAL_TOKENS} ({verdict(median(tokens) <= GOAL_TOKENS)})"),
        ("bytes per image sent", f"{median(kb):.0f} kB", f"<= {GOAL_KB:.0f} kB ({verdict(median(kb) <= GOAL_KB)})"),
        ("frame stage, one photo alone (p50)", f"{frames_alone:.0f} ms", f"<= {GOAL_FRAMES_MS:.0f} ms ({verdict(frames_alone <= GOAL_FRAMES_MS)})"),
        ("frame stage in the burst, median of the N", f"{stage['frames']:.0f} ms", "(waits for the 2 cores)"),
        ("story stage, median of the N", f"{stage['story']:.0f} ms", ""),
        ("translation stage, median of the N", f"{stage['translation']:.0f} ms", ""),
        ("total (gateway's timings_ms), median", f"{stage['total']:.0f} ms", ""),
        ("frame stage's share of the total, median", f"{share:.0%}", ""),
        (f"gateway overhead alone, p50 of {len(singles)}", f"{median(overhead):.0f} ms", f"<= {GOAL_OVERHEAD_MS:.0f} ms ({verdict(median(overhead) <= GOAL_OVERHEAD_MS)})"),
        ("  of which inside timings_ms.total", f"{median(inside):.0f} ms", ""),
    ]  # fmt: skip  # one figure a line reads as the table it prints
    for name, measured, goal in rows:
        print(f"{name:<44}{measured:>14}  {goal}")
    print()
    print(f"images sent: {', '.join(f'{n} x {s}' for s, n in sizes.most_common())}")
    print(
        "overhead alone = client wall time - time the provider held a call - frame stage; "
        f"one request alone took {median([a.seconds for a in singles]) * 1000:.0f} ms (p50) "
        f"with frames {median([a.timings_ms['frames'] for a in singles]):.0f} ms"
    )
    if cpu:
        total = sum(cpu.values())
        print(
            f"\nCPU used during the burst: {total:.1f} s over {wall:.1f} s of wall time "
            f"({total / wall:.1f} of {os.cpu_count()} cores busy on average)"
        )
        for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
            print(f"  {name:<24}{seconds:>6.2f} s  {seconds / requests * 1000:>5.0f} ms a request")


def setting(pair: str) -> tuple[str, str]:
    """One --env KEY=VALUE; raises argparse.ArgumentTypeError for anything else."""
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env takes KEY=VALUE, not {pair!r}")
    return key, value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="concurrent requests (32)")
    parser.add_argument(
        "--latency", type=float, default=1.0, help="seconds per provider call (1.0)"
    )
    parser.add_argument(
        "--singles", type=int, default=10, help="sequential single requests for the overhead (10)"
    )
    parser.add_argument(
        "--env", action="append", default=[], type=setting, metavar="KEY=VALUE",
        help="a setting for every service and the gateway, e.g. IMGSTORY_STORY_IN_FLIGHT=32",
    )  # fmt: skip
    parser.add_argument(
        "--photo", type=Path, help="send this photo instead of the 1920x1080 astronaut"
    )
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.latency, args.singles, dict(args.env), args.photo))
