"""Time durable jobs through the real stack, and the synchronous path against the commit before them.

Every part runs as its own process, as bench.concurrency runs it (NATS, the fake
OpenAI-compatible provider answering each call after a fixed 1.0 s, the three services
and the gateway, default settings). In one run it:

  1. starts this tree's stack and, side by side, one from the commit before jobs
     (BASELINE, written out with `git archive`, same virtualenv), and times the
     synchronous path on both, one request alone at a time, alternating: POST /analyze/
     with a small photo (1920x1080, 256 kB, which rides the queue message) and a phone
     photo (4032x3024, 4.5 MB, which goes through the blob bucket), then 32 small photos
     at once as bench.concurrency sends them; the baseline stack is then stopped;
  2. sends 500 POST /jobs with the small photo at once, one connection each, then 200
     with the phone photo, and reports the submit latency p50/p99, the time until all
     are done against the floor the in-flight limits allow (derived from the settings
     the stack runs with), that none was lost or run twice (each job's record says
     attempts 1, its event stream replays exactly one `result`, the events heard live
     on NATS one `running` and one `result`, the provider billed the calls of one run),
     and the gateway's peak RSS during the burst against its RSS idle (VmHWM of
     /proc/<pid>/status, reset before each burst). Every job is deleted once checked.

Options: --jobs N (500), --phone-jobs N (200; 0 skips a burst), --latency S (1.0), --connections C (a
connection a job), --singles K (12 requests alone per stack with the small photo;
--phone-singles 4 with the phone photo), --baseline COMMIT (4ad4c0c; "none" skips the
comparison), --env KEY=VALUE (repeatable, for every process of both stacks, e.g.
IMGSTORY_JOB_WORKERS=64). It takes about 5 minutes on 2 cores.

Run: make bench-jobs   (or: .venv/bin/python -m bench.jobs)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
from nats.aio.msg import Msg

from bench.concurrency import analyze, burst_cpu, setting, wait_ready, write_photo
from bench.jobs_report import Burst, Side, floor, report
from bench.stacks import (
    Stack,
    export_tree,
    log_problems,
    memory_kib,
    reset_peak,
    running_stack,
    write_phone_photo,
)
from contracts.messages import JobEvent, JobStatus
from contracts.subjects import JOB_EVENTS_PREFIX
from devstack.fake_openai import RESET_PATH, STATS_PATH
from devstack.processes import ROOT

BASELINE = "4ad4c0c"  # main just before durable jobs (issue 17)
CONCURRENT = 32  # bench.concurrency's burst of synchronous requests
SAMPLE_SECONDS = 0.2  # how often the gateway's RSS is read during a burst
CHECKS_AT_ONCE = 16  # jobs read, replayed and deleted at once after a burst
CHUNK = 64 * 1024  # bytes of an upload written at a time
_FINISHED = {status.value for status in JobStatus if status.finished}
_events = msgspec.msgpack.Decoder(JobEvent)
_status = msgspec.json.Decoder(dict[str, Any])


@dataclass
class Options:
    """The command line's choices (see the module's docstring)."""

    jobs: int = 500
    phone_jobs: int = 200
    latency: float = 1.0
    connections: int = 0  # 0: as many as jobs
    singles: int = 12
    phone_singles: int = 4
    baseline: str | None = BASELINE
    extra: dict[str, str] = field(default_factory=dict)


class Heard:
    """Every job's events as NATS carries them to the stream: who ran, who ended, when."""

    def __init__(self) -> None:
        self.ended: dict[str, tuple[str, float]] = {}  # job -> (final status, when heard)
        self.runs: Counter[str] = Counter()  # `status` running events per job
        self.results: Counter[str] = Counter()  # `result` events per job

    async def heard(self, msg: Msg) -> None:
        job_id = msg.subject.rsplit(".", 1)[-1]
        try:
            event = _events.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if event.name == "result":
            self.results[job_id] += 1
        elif event.name == "status":
            status = _status.decode(event.data).get("status")
            if status == JobStatus.RUNNING.value:
                self.runs[job_id] += 1
            elif status in _FINISHED:
                self.ended.setdefault(job_id, (str(status), time.perf_counter()))

    async def all_ended(self, ids: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(job_id not in self.ended for job_id in ids):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True


@contextlib.asynccontextmanager
async def listening(nats_url: str) -> AsyncIterator[Heard]:
    """A connection of the benchmark's own to the stack's NATS, hearing every job's events."""
    heard = Heard()
    nc = await nats.connect(nats_url, name="bench-jobs")
    try:
        await nc.subscribe(f"{JOB_EVENTS_PREFIX}.*", cb=heard.heard)
        yield heard
    finally:
        await nc.close()


class JobPost:
    """One POST /jobs, encoded once, then sent as is, each time on a connection of its own.

    A lean client on purpose: httpx spent about 9 ms of CPU a request here (4.7 s for a
    burst of 500), CPU that a 2-core machine takes from the gateway being measured. The
    body goes out in CHUNK pieces, each written once the last has left, so N uploads at
    once never sit whole in this process's buffers.
    """

    def __init__(self, url: str, photo: bytes) -> None:
        address = httpx.URL(url)
        self.host, self.port = address.host, address.port or 80
        boundary = "imgstory-bench-" + secrets.token_hex(8)
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        self.body = part.encode() + photo + f"\r\n--{boundary}--\r\n".encode()
        self.head = (
            f"POST /jobs HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()

    async def send(self) -> tuple[int, float, str | None]:
        """(status, seconds, job id); status 0 when the connection failed."""
        started = time.perf_counter()
        try:
            status, body = await self._exchange()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            return 0, time.perf_counter() - started, None
        seconds = time.perf_counter() - started
        job_id = str(_status.decode(body)["id"]) if status == 202 else None
        return status, seconds, job_id

    async def _exchange(self) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self.head)
            body = memoryview(self.body)
            for start in range(0, len(body), CHUNK):
                writer.write(body[start : start + CHUNK])
                await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            answer = await (reader.read() if length is None else reader.readexactly(length))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return status, answer


async def alone(
    client: httpx.AsyncClient, fake: httpx.AsyncClient, photo: bytes
) -> tuple[float, float]:
    """One POST /analyze/ alone: (milliseconds not spent by the provider, the frame stage's).

    The frame stage is not taken off: before jobs it included storing a large upload in
    the bucket, which a job does before its analysis starts.
    """
    await fake.post(RESET_PATH)
    answer = await analyze(client, photo)
    if answer.status != 200:
        raise RuntimeError(f"POST /analyze/ answered {answer.status}")
    busy = (await fake.get(STATS_PATH)).json()["busy_seconds"]
    return (answer.seconds - busy) * 1000, answer.timings_ms.get("frames", 0.0)


async def concurrent(
    stack: Stack, client: httpx.AsyncClient, fake: httpx.AsyncClient, photo: bytes
) -> dict[str, float]:
    """bench.concurrency's burst: CONCURRENT synchronous requests at once."""
    await fake.post(RESET_PATH)
    before = burst_cpu(stack.processes, stack.bus)
    started = time.perf_counter()
    answers = await asyncio.gather(*(analyze(client, photo) for _ in range(CONCURRENT)))
    wall = time.perf_counter() - started
    gateway_cpu = burst_cpu(stack.processes, stack.bus).get("gateway", 0.0)
    stats = (await fake.get(STATS_PATH)).json()
    return {
        "wall": wall,
        "ok": sum(a.status == 200 for a in answers),
        "in_flight": stats["max_in_flight"],
        "gateway_ms": (gateway_cpu - before.get("gateway", 0.0)) / CONCURRENT * 1000,
    }


@contextlib.asynccontextmanager
async def clients(
    stack: Stack, connections: int = CONCURRENT
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """httpx clients of the gateway (as bench.concurrency's) and of the fake provider."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=600, limits=limits) as client,
        httpx.AsyncClient(base_url=stack.fake_url, timeout=30) as fake,
    ):
        yield client, fake


async def side_by_side(
    stacks: list[Stack], photos: dict[str, bytes], options: Options
) -> list[Side]:
    """The synchronous path on each stack: requests alone (alternating stacks, each
    pair in the other order than the last), then the concurrent burst on each."""
    async with contextlib.AsyncExitStack() as exits:
        pairs = [await exits.enter_async_context(clients(s)) for s in stacks]
        for client, _ in pairs:
            warm = await analyze(client, photos["small"])  # opens connections, loads models
            if warm.status != 200:
                raise RuntimeError(f"the warm-up request answered {warm.status}")
        sides = [Side(stack.name) for stack in stacks]
        for kind, count in (("small", options.singles), ("phone", options.phone_singles)):
            for turn in range(count):
                order = range(len(stacks)) if turn % 2 == 0 else reversed(range(len(stacks)))
                for i in order:
                    client, fake = pairs[i]
                    beyond, frames = await alone(client, fake, photos[kind])
                    sides[i].alone.setdefault(kind, []).append(beyond)
                    sides[i].frames.setdefault(kind, []).append(frames)
        for side, stack, (client, fake) in zip(sides, stacks, pairs, strict=True):
            side.concurrent = await concurrent(stack, client, fake, photos["small"])
    return sides


async def burst(stack: Stack, kind: str, photo: bytes, jobs: int, options: Options) -> Burst:
    """N POST /jobs at once, waited for until all end; each then checked and deleted."""
    result = Burst(kind=kind, photo_bytes=len(photo), jobs=jobs)
    pid = stack.gateway_pid
    nats_pid = stack.bus.process.pid if stack.bus.process else None
    post = JobPost(stack.url, photo)
    gateway_log = stack.logs / "gateway.log"
    since = gateway_log.stat().st_size
    pool = asyncio.Semaphore(options.connections or jobs)

    async def submit() -> tuple[int, float, str | None]:
        started = time.perf_counter()
        async with pool:
            status, _, job_id = await post.send()
        return status, time.perf_counter() - started, job_id

    async with clients(stack) as (client, fake), listening(stack.bus.url) as heard:
        for _ in range(3):  # alone first, as a reference for the burst's latencies
            _, seconds, job_id = await submit()
            result.alone.append(seconds)
            if job_id and await heard.all_ended([job_id], 60):
                await client.delete(f"/jobs/{job_id}")
        await fake.post(RESET_PATH)
        result.rss_idle = memory_kib(pid)
        reset_peak(pid)
        if nats_pid:
            reset_peak(nats_pid)
        peak = Peak(pid)
        sampler = asyncio.create_task(peak.sample())
        before = burst_cpu(stack.processes, stack.bus)
        started = time.perf_counter()
        submitted = await asyncio.gather(*(submit() for _ in range(jobs)))
        result.submit_wall = time.perf_counter() - started
        result.cpu_submitting = _spent(stack, before)
        result.submits = [seconds for status, seconds, _ in submitted if status == 202]
        result.refused = Counter(status for status, _, _ in submitted if status != 202)
        ids = [job_id for _, _, job_id in submitted if job_id]
        result.floor, result.floor_note = floor(stack.env, jobs, options.latency)
        ok = await heard.all_ended(ids, timeout=max(2 * result.floor, result.floor + 120))
        finished = [heard.ended[i][1] for i in ids if i in heard.ended]
        result.done_after = max(finished) - started if ok and finished else None
        sampler.cancel()
        result.cpu = _spent(stack, before)
        result.rss_peak = max(memory_kib(pid, "VmHWM") or 0, peak.most)
        result.nats_peak = memory_kib(nats_pid, "VmHWM") if nats_pid else None
        result.rss_after = memory_kib(pid)
        result.provider = (await fake.get(STATS_PATH)).json()
        result.ended = Counter(heard.ended[i][0] for i in ids if i in heard.ended)
        result.unfinished = sum(i not in heard.ended for i in ids)
        result.live_runs = Counter(heard.runs[i] for i in ids)
        result.live_results = Counter(heard.results[i] for i in ids)
        checking = time.perf_counter()
        await check_all(client, ids, result)
        result.check_seconds = time.perf_counter() - checking
        result.rss_deleted = memory_kib(pid)
        result.nats_deleted = memory_kib(nats_pid) if nats_pid else None
        result.problems = log_problems(gateway_log, since)
    return result


def _spent(stack: Stack, before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used since ``before`` (bench.concurrency.burst_cpu)."""
    now = burst_cpu(stack.processes, stack.bus)
    return {name: seconds - before.get(name, 0.0) for name, seconds in now.items()}


class Peak:
    """The highest RSS read every SAMPLE_SECONDS (besides VmHWM, should clear_refs fail)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most = 0

    async def sample(self) -> None:
        while True:
            self.most = max(self.most, memory_kib(self.pid) or 0)
            await asyncio.sleep(SAMPLE_SECONDS)


async def check_all(client: httpx.AsyncClient, ids: list[str], result: Burst) -> None:
    """Read each job and replay its events, then delete it."""
    slots = asyncio.Semaphore(CHECKS_AT_ONCE)

    async def check(job_id: str) -> None:
        async with slots:
            job = (await client.get(f"/jobs/{job_id}")).json()
            result.statuses[job["status"]] += 1
            result.attempts[job["attempts"]] += 1
            if job["started_at"] and job["finished_at"]:
                created, began, ended = (
                    datetime.fromisoformat(job[k]).timestamp()
                    for k in ("created_at", "started_at", "finished_at")
                )
                result.waited.append(began - created)
                result.ran.append(ended - began)
            replay = (await client.get(f"/jobs/{job_id}/events", timeout=60)).text
            lines = replay.splitlines()
            numbers = [line.removeprefix("id:").strip() for line in lines if line.startswith("id:")]
            result.replayed_results[lines.count("event: result")] += 1
            result.replayed_statuses[lines.count("event: status")] += 1
            result.replay_ids_unique &= len(numbers) == len(set(numbers))
            await client.delete(f"/jobs/{job_id}")

    await asyncio.gather(*(check(job_id) for job_id in ids))


async def main(options: Options) -> None:
    with tempfile.TemporaryDirectory(prefix="imgstory-bench-jobs-") as scratch:
        tmp = Path(scratch)
        photos = {
            "small": write_photo(tmp / "photo.jpg"),
            "phone": await asyncio.to_thread(write_phone_photo, tmp / "phone.jpg"),
        }
        baseline = None
        if options.baseline:
            try:
                baseline = f"main {export_tree(options.baseline, tmp / 'baseline')}"
            except RuntimeError as err:  # a checkout without that commit: no comparison
                print(f"no side-by-side comparison: {err}")
        async with running_stack("this branch", tmp, ROOT, options.latency, options.extra) as here:
            async with contextlib.AsyncExitStack() as before:
                stacks = [here]
                if baseline:
                    old = running_stack(
                        baseline, tmp, tmp / "baseline", options.latency, options.extra
                    )
                    stacks.insert(0, await before.enter_async_context(old))
                await asyncio.gather(*(wait_ready(s.url, s.processes) for s in stacks))
                sides = await side_by_side(stacks, photos, options)
            # The baseline is stopped: the bursts have the machine to themselves.
            bursts = [
                await burst(here, kind, photos[kind], jobs, options)
                for kind, jobs in (("small", options.jobs), ("phone", options.phone_jobs))
                if jobs > 0  # 0: that burst is not run
            ]
        report(options.latency, sides, bursts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    number = parser.add_argument
    number("--jobs", type=int, default=500, help="small-photo jobs in the burst (500)")
    number("--phone-jobs", type=int, default=200, help="phone-photo jobs in the burst (200)")
    number("--latency", type=float, default=1.0, help="seconds per provider call (1.0)")
    number("--connections", type=int, default=0, help="client connections (0: one a job)")
    number("--singles", type=int, default=12, help="small-photo requests alone per stack (12)")
    number("--phone-singles", type=int, default=4, help="phone-photo ones alone per stack (4)")
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"commit to compare with ({BASELINE}; none: skip)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=setting,
        metavar="KEY=VALUE",
        help="a setting for every process of both stacks, e.g. IMGSTORY_JOB_WORKERS=64",
    )
    args = parser.parse_args()
    baseline = None if args.baseline.lower() == "none" else args.baseline
    options = Options(
        jobs=args.jobs,
        phone_jobs=args.phone_jobs,
        latency=args.latency,
        connections=args.connections,
        singles=args.singles,
        phone_singles=args.phone_singles,
        baseline=baseline,
        extra=dict(args.env),
    )
    asyncio.run(main(options))
