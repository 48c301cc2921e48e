"""IMGSTORY_LOG_FORMAT=json: every process writes one JSON object a line, each naming its request."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.logs import REQUEST_ID, JsonFormatter, RequestIdFilter
from devstack.fake_answers import Delay, Reply
from devstack.fake_openai import FakeOpenAI
from devstack.processes import ROOT, free_port, service_env, wait_for_port
from tests.media import sample_photo

ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PROCESSES = {
    "frame_service": "imgstory-frames",
    "story_service": "imgstory-story",
    "translation_service": "imgstory-translation",
    "gateway": "imgstory-gateway",
}


def formatted(record: logging.LogRecord) -> dict[str, Any]:
    RequestIdFilter().filter(record)
    line = JsonFormatter("imgstory-test").format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def record(message: str, *args: object, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("tests.logs", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_json_line_has_time_level_service_logger_message_and_no_request_outside_one() -> None:
    line = formatted(record("%d frames from %s", 3, "a photo"))
    assert ISO_UTC_MS.fullmatch(line["time"]), line["time"]
    assert line == {
        "time": line["time"],
        "level": "WARNING",
        "service": "imgstory-test",
        "logger": "tests.logs",
        "message": "3 frames from a photo",
        "request_id": None,
    }


def test_a_json_line_carries_the_request_id_set_for_the_task() -> None:
    token = REQUEST_ID.set("trace-me_42")
    try:
        line = formatted(record("working"))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "trace-me_42"


def test_an_exception_and_a_multiline_message_stay_on_one_line() -> None:
    try:
        raise RuntimeError("first\nsecond")
    except RuntimeError:
        line = formatted(record("broke\nbadly\u2028here", exc_info=sys.exc_info()))
    assert line["message"] == "broke\nbadly\u2028here"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("RuntimeError: first\nsecond")


async def run_python(*args: str, **env: str) -> tuple[int, str]:
    """Run ``python *args`` to its end (no NATS answers it); its exit code and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=service_env("nats://127.0.0.1:9", None, **env),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_warnings_and_a_crash_come_out_as_json_lines_too() -> None:
    code, stderr = await run_python(
        "-c",
        "import warnings\n"
        "from bus.logs import configure_logging\n"
        "configure_logging(json_lines=True, service='imgstory-test')\n"
        "warnings.warn('careful')\n"
        "raise RuntimeError('boom')\n",
    )
    assert code == 1
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert [(line["level"], line["logger"]) for line in lines] == [
        ("WARNING", "py.warnings"),
        ("CRITICAL", "imgstory"),
    ]
    assert "careful" in lines[0]["message"]
    assert lines[1]["exc_info"].endswith("RuntimeError: boom")


@pytest.mark.parametrize("module", ["translation_service", "gateway"])
async def test_an_unknown_log_format_stops_the_process_with_one_line(module: str) -> None:
    code, stderr = await run_python("-m", module, IMGSTORY_LOG_FORMAT="yaml")
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert "refusing to start" in line and "IMGSTORY_LOG_FORMAT" in line and "'yaml'" in line


async def test_a_bad_setting_is_refused_in_a_json_line() -> None:
    code, stderr = await run_python(
        "-m",
        "frame_service",
        IMGSTORY_LOG_FORMAT="JSON",
        IMGSTORY_FRAMES_IN_FLIGHT="none",
    )
    assert code == 2
    (line,) = (json.loads(text) for text in stderr.strip().splitlines())
    assert line["level"] == "CRITICAL" and line["service"] == "imgstory-frames"
    assert "IMGSTORY_FRAMES_IN_FLIGHT" in line["message"]


@asynccontextmanager
async def process_stack(
    nats_url: str, fake: FakeOpenAI, logs: Path, **extra: str
) -> AsyncIterator[str]:
    """The three services and the gateway as `python -m` processes, their output in `logs`.

    Yields the gateway's URL once it is ready (every service answers); every process
    is stopped by SIGTERM on exit.
    """
    port = free_port()
    env = service_env(nats_url, fake, IMGSTORY_PORT=str(port), **extra)
    async with AsyncExitStack() as stack:
        for module in PROCESSES:  # the gateway last: the services are up when it asks
            stdout = stack.enter_context((logs / f"{module}.out").open("wb"))
            stderr = stack.enter_context((logs / f"{module}.err").open("wb"))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, cwd=ROOT, env=env, stdout=stdout, stderr=stderr
            )
            stack.push_async_callback(stopped, process)
        url = f"http://127.0.0.1:{port}"
        await wait_for_port(port, process, timeout=30)  # the gateway's
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(300):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the services did not all answer the gateway within 30 s")
        yield url


async def stopped(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 40)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of `path`, parsed: a line that is not a JSON object fails the test."""
    lines = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name} has a line that is not JSON: {text!r}")
        assert isinstance(line, dict), text
        lines.append(line)
    return lines


async def test_one_request_is_followed_through_every_process_in_json_lines(
    empty_nats_url: str, openai: FakeOpenAI, tmp_path: Path
) -> None:
    # The story first, then a translation that is not Thai: the translation service's
    # own warning about it must name the request too.
    openai.script(Delay(0), Reply("Still English, not Thai at all."))
    photo = sample_photo("coffee.png")
    async with process_stack(empty_nats_url, openai, tmp_path, IMGSTORY_LOG_FORMAT="json") as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.post(
                "/analyze/",
                files=[("files", (photo.name, photo.read_bytes(), "image/png"))],
                headers={"X-Request-ID": "trace-me_42"},
            )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "trace-me_42"
    for module, service in PROCESSES.items():
        assert (tmp_path / f"{module}.out").read_bytes() == b"", module
        lines = json_lines(tmp_path / f"{module}.err")
        for line in lines:
            assert line["service"] == service and ISO_UTC_MS.fullmatch(line["time"]), line
            assert {"level", "logger", "message", "request_id"} <= set(line), line
        # Its own code's lines, not only its HTTP client's. A service's messages name
        # the request's pipeline key ("trace-me_42-<hex>", the id in the NATS message),
        # never the bare id: a service line stamped with exactly it got it from the header.
        own = [line for line in lines if line["logger"].startswith(module)]
        assert any(line["request_id"] == "trace-me_42" for line in own), lines
    gateway = json_lines(tmp_path / "gateway.err")
    # uvicorn's own lines come out the same way; its access line names the request.
    access = [line["message"] for line in gateway if line["request_id"] == "trace-me_42"]
    assert any('"POST /analyze' in message for message in access), access
    started = [line for line in gateway if line["logger"] == "uvicorn.error"]
    assert started and all(line["request_id"] is None for line in started)
