"""Running a service or the gateway as a real `python -m` process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.fake_openai import FAKE_API_KEY, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(nats_url: str, fake: FakeOpenAI | None = None, **extra: str) -> dict[str, str]:
    """Environment for running a service or the gateway as a real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMGSTORY_"))}
    env.update({"NATS_URL": nats_url, "PYTHONPATH": str(ROOT)})
    if fake is not None:
        env.update({"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": fake.base_url})
    env.update(extra)
    return env


async def wait_for_port(
    port: int, process: asyncio.subprocess.Process, timeout: float = 15
) -> None:
    """Return once something accepts connections on the loopback `port`.

    Fails the test if `process` exits first or nothing listens within `timeout` seconds.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process.returncode is not None:
                pytest.fail(f"the process exited at start-up with code {process.returncode}")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"nothing listened on port {port} within {timeout} s")
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


@asynccontextmanager
async def running_gateway(
    nats_url: str, port: int, **extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m gateway` on `port`, listening inside the block and stopped by SIGTERM after it.

    `extra` are further environment variables for it. The block gets the process.
    """
    env = service_env(nats_url, IMGSTORY_PORT=str(port))
    env.update(extra)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", cwd=ROOT, env=env
    )
    try:
        await wait_for_port(port, process)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
