"""Schemathesis over /schema: whatever the documented API is sent, no answer is a 5xx.

Every part is real and runs as its own process (NATS, the three services, the gateway),
only the model provider is the fake; examples per operation are bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from devstack.fake_openai import FakeOpenAI
from devstack.nats_server import NatsServer
from devstack.processes import ROOT, free_port, service_env

EXAMPLES = 25  # per operation: enough to send every route nonsense, bounded in time


def _wait_until_ready(url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{process.args!r} exited at start-up with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("the stack was not ready within 60 s")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, uploads: Path) -> Iterator[str]:
    """The whole stack as processes; yields the gateway's URL."""
    nats = NatsServer(tmp_path_factory.mktemp("nats")).start()
    fake = FakeOpenAI().start()
    port = free_port()
    # Quick to start: no Whisper, no perception (the story model sees images anyway).
    env = service_env(
        nats.url,
        fake,
        IMGSTORY_PORT=str(port),
        IMGSTORY_TRANSCRIBE="0",
        IMGSTORY_PERCEPTION="0",
        IMGSTORY_UPLOAD_DIR=str(uploads),
    )
    processes = [
        subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env)
        for module in ("frame_service", "story_service", "translation_service", "gateway")
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, processes)
        yield url
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        fake.stop()
        nats.stop()


def test_no_request_the_schema_allows_gets_a_5xx(stack: str) -> None:
    schema = schemathesis.openapi.from_url(f"{stack}/schema/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of /schema can be read
        operations.append(result.ok())
    assert {op.path for op in operations} >= {"/analyze", "/analyze/stream", "/readyz"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same examples every run: a failure can be reproduced
            database=None,
        )
        def no_5xx(case: schemathesis.Case) -> None:
            response = case.call(base_url=stack, timeout=30)

            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            if response.status_code >= 400:
                # Every refusal is the documented {"detail": ...} body.
                assert "detail" in response.json()

        no_5xx()


def test_the_fuzzing_left_no_upload_file_behind(stack: str, uploads: Path) -> None:
    # Runs after the fuzzing (pytest keeps file order): every temp upload was removed.
    assert list(uploads.iterdir()) == []
