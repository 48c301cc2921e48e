"""Stacks side by side for a benchmark: this tree's and a baseline commit's, and their memory.

Each stack runs as bench.concurrency runs one (a nats-server, the fake provider at a
fixed latency, the frame, story and translation services and the gateway, each a
process), but from a source tree of its own: the baseline is written out of git with
`git archive` into a scratch folder and run with this virtualenv, so one run compares
two commits on the same machine at the same time. Both use this tree's fake provider:
the instrument is the same on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import subprocess
import tarfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from devstack.fake_openai import FAKE_API_KEY
from devstack.media import sample_photo
from devstack.nats_server import NatsServer
from devstack.processes import ROOT, ProcessGroup, free_port, service_env

PHONE_SIZE = (4032, 3024)  # a 12-megapixel phone camera, 4:3
PHONE_GRAIN = 6.0  # sensor noise (standard deviation, 8-bit levels): what makes it MBs
PHONE_QUALITY = 95
SERVICES = ("frame_service", "story_service", "translation_service")
TOKEN_MODEL = "gpt-4.1-mini"  # the fake provider's story model (the price goals are set in)


@dataclass(frozen=True)
class Stack:
    """One running stack: where its gateway and fake provider answer, and its processes."""

    name: str
    url: str
    fake_url: str
    processes: ProcessGroup
    bus: NatsServer
    env: dict[str, str]  # every service's and the gateway's environment
    logs: Path  # <process>.log for each process

    @property
    def gateway_pid(self) -> int:
        return self.processes.processes["gateway"].pid


def export_tree(commit: str, dest: Path) -> str:
    """Write the files of ``commit`` of this repository into ``dest``; its short hash.

    Raises RuntimeError when git does not know the commit (or is not there).
    """
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True
    )
    short = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", commit], capture_output=True, text=True
    )
    if archive.returncode or short.returncode:
        raise RuntimeError(f"git archive {commit}: {archive.stderr.decode(errors='replace')}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return short.stdout.strip()


async def start_fake(stack: ProcessGroup, latency: float, env: dict[str, str], logs: Path) -> str:
    """Start the fake provider in `stack`; returns its base URL (the first line it prints)."""
    args = ["--model", TOKEN_MODEL, "--latency", str(latency)]
    process = stack.python(
        "fake_openai",
        "devstack.fake_openai",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        log=logs / "fake_openai.log",
    )
    assert process.stdout is not None  # piped just above
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
    if not line:
        raise RuntimeError(f"the fake provider did not start; see {logs}")
    return line.decode().strip()


@contextlib.asynccontextmanager
async def running_stack(
    name: str, scratch: Path, root: Path, latency: float, extra: dict[str, str]
) -> AsyncIterator[Stack]:
    """Start every part of the stack whose sources are ``root``; yields it as soon as the
    processes are started (see bench.concurrency.wait_ready). Each process's output is in
    scratch/name/logs/<process>.log."""
    tmp = scratch / name
    for folder in ("nats", "logs", "uploads", "work"):
        (tmp / folder).mkdir(parents=True)
    logs = tmp / "logs"
    with NatsServer(tmp / "nats") as bus:
        async with ProcessGroup(grace=20) as group:
            fake_url = await start_fake(group, latency, service_env(bus.url), logs)
            port = free_port()
            env = service_env(
                bus.url,
                None,
                OPENAI_API_KEY=FAKE_API_KEY,
                OPENAI_BASE_URL=fake_url,
                IMGSTORY_PORT=str(port),
                IMGSTORY_UPLOAD_DIR=str(tmp / "uploads"),
                IMGSTORY_WORK_DIR=str(tmp / "work"),
                PYTHONPATH=str(root),
                **extra,
            )
            for module in (*SERVICES, "gateway"):
                group.python(module, module, env=env, log=logs / f"{module}.log", cwd=root)
            url = f"http://127.0.0.1:{port}"
            yield Stack(name, url, fake_url.removesuffix("/v1"), group, bus, env, logs)


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<rest>.*)$")
_IDS = re.compile(r"job_[0-9a-f]{32}|\b[0-9a-f]{32}\b")


def log_problems(log: Path, since: int = 0) -> Counter[str]:
    """The warnings and errors a process logged after byte ``since`` of its log, counted
    by message (ids blanked out; an error's exception, the last line of its traceback,
    appended)."""
    with log.open("rb") as file:
        file.seek(since)
        lines = file.read().decode(errors="replace").splitlines()
    problems: Counter[str] = Counter()
    current: list[str] = []
    for line in [*lines, "0000-00-00 00:00:00,0 END"]:
        if _RECORD.match(line) and current:
            head = _RECORD.match(current[0])
            if head and head["level"] in {"WARNING", "ERROR", "CRITICAL"}:
                tail = f" | {current[-1].strip()}" if len(current) > 1 else ""
                problems[_IDS.sub("<id>", f"{head['level']} {head['rest']}{tail}")] += 1
            current = []
        current.append(line)
    return problems


def memory_kib(pid: int, field: str = "VmRSS") -> int | None:
    """A figure of /proc/<pid>/status in KiB (VmRSS now, VmHWM the peak); None off Linux."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def reset_peak(pid: int) -> bool:
    """Start the process's VmHWM again from its RSS now (Linux's clear_refs "5")."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def write_phone_photo(path: Path) -> bytes:
    """Write a phone-sized JPEG (4032x3024, quality 95, with sensor grain: about 4 MB)
    made from the astronaut; returns its bytes."""
    with Image.open(sample_photo("astronaut.png")) as source:
        img = source.convert("RGB")
    width, height = img.size
    crop = round(width * PHONE_SIZE[1] / PHONE_SIZE[0])
    top = (height - crop) // 2
    img = img.crop((0, top, width, top + crop)).resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(img, dtype=np.float32)
    pixels += np.random.default_rng(17).normal(0.0, PHONE_GRAIN, pixels.shape).astype(np.float32)
    grainy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    grainy.save(buffer, "JPEG", quality=PHONE_QUALITY)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()
