"""Helpers for tests that submit jobs through the gateway and wait for them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx


async def until_finished(
    client: httpx.AsyncClient, url: str, headers: dict | None = None, wait: float = 30
) -> dict:
    """The job at ``url`` once it has ended (succeeded, failed or canceled)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        job: dict = (await client.get(url, headers=headers)).json()
        if job["status"] in {"succeeded", "failed", "canceled"}:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not finish: {job}")


async def submit_photo(client: httpx.AsyncClient, photo: Path, **data: Any) -> dict:
    """POST /jobs with one PNG photo and the form fields ``data``: the job answered."""
    files = [("files", (photo.name, photo.read_bytes(), "image/png"))]
    answer = await client.post("/jobs", files=files, data=data)
    assert answer.status_code == 202, answer.text
    job: dict = answer.json()
    return job
