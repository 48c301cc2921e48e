"""Schemathesis over /schema/openapi.json with every check: the document says what the server does.

Every part is real and runs as its own process (NATS, the three services, a gateway and
a second one with API keys), only the model provider is the fake. Three runs, each
bounded and seeded so a failure can be reproduced:

- the examples and coverage phases: the schema's examples, and the boundary values and
  the negatives it names (too many files, none, a prompt one character too long...);
- the fuzzing phase, with real media for the file parts (random bytes are not a JPEG);
- the coverage phase on the gateway with keys, which adds the authentication checks.

No answer names another operation's input (there are no OpenAPI links), so the stateful
phase has nothing to chain and is not run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import BaseSchema
from schemathesis.core.media_types import MEDIA_TYPE_STRATEGIES
from schemathesis.core.mutations import OperatorKind
from schemathesis.core.parameters import ParameterLocation

from devstack.fake_openai import FakeOpenAI
from devstack.nats_server import NatsServer
from devstack.processes import ROOT, free_port, service_env
from gateway import config
from gateway.app import create_app
from gateway.config import Limits
from gateway.uploads import FILES_FIELD
from tests.media import write_jpeg, write_png, write_video

EXAMPLES = 40  # fuzzed requests per operation: every route gets nonsense, bounded in time
SEED = 16  # the same requests every run: a failure can be reproduced
KEY = "schema-fuzz-key"
REQUEST_TIMEOUT = 30


@dataclass(frozen=True)
class Stack:
    open_url: str  # a gateway without keys
    keyed_url: str  # the same stack behind a gateway that wants KEY


def _wait_until_ready(urls: list[str], processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    waiting = list(urls)
    while waiting and time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{process.args!r} exited at start-up with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{waiting[0]}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    waiting.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.2)
    if waiting:
        pytest.fail(f"{waiting} not ready within 60 s")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, uploads: Path) -> Iterator[Stack]:
    """The whole stack as processes, with two gateways."""
    nats = NatsServer(tmp_path_factory.mktemp("nats")).start()
    fake = FakeOpenAI().start()
    ports = free_port(), free_port()
    # Quick to start: no Whisper, no perception (the story model sees images anyway).
    env = service_env(
        nats.url,
        fake,
        IMGSTORY_TRANSCRIBE="0",
        IMGSTORY_PERCEPTION="0",
        IMGSTORY_UPLOAD_DIR=str(uploads),
    )
    gateways = [
        {"IMGSTORY_PORT": str(ports[0])},
        {"IMGSTORY_PORT": str(ports[1]), "IMGSTORY_API_KEYS": KEY},
    ]
    processes = [
        subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env)
        for module in ("frame_service", "story_service", "translation_service")
    ] + [
        subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env={**env, **extra})
        for extra in gateways
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        _wait_until_ready(urls, processes)
        yield Stack(*urls)
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


def _document(env: dict[str, str]) -> dict[str, Any]:
    """The OpenAPI document of a gateway started with ``env`` (built here, no NATS needed).

    Schemathesis builds its tests when pytest collects them, before any server is up;
    test_the_gateways_serve_these_documents checks the processes serve the same.
    """
    return create_app(config.load(env)).openapi_schema.to_schema()


PHASES = ("examples", "coverage", "fuzzing", "stateful")
OPEN_ENV: dict[str, str] = {}
KEYED_ENV = {"IMGSTORY_API_KEYS": KEY}


def _schema(env: dict[str, str], phases: list[str], **extra: Any) -> BaseSchema:
    """A gateway's document, set to run only ``phases``, with every check on."""
    settings = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": REQUEST_TIMEOUT,
            "suppress-health-check": ["all"],  # real services are slow for Hypothesis' taste
            "checks": {"enabled": True},
            # An Idempotency-Key the run already sent with another body is refused (422)
            # by design: a valid request by the schema, which cannot say "not reused".
            "operations": [
                {
                    "include-path": "/jobs",
                    "include-method": "POST",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [
                                "2xx",
                                "3xx",
                                "401",
                                "403",
                                "404",
                                "409",
                                "422",
                                "429",
                                "5xx",
                            ]
                        }
                    },
                }
            ],
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "phases": {name: {"enabled": name in phases} for name in PHASES},
            **extra,
        }
    )
    return schemathesis.openapi.from_dict(_document(env), config=settings)


bounded = _schema(OPEN_ENV, ["examples", "coverage"])
fuzzed = _schema(OPEN_ENV, ["fuzzing"])
# Either scheme the document names carries the key.
keyed = _schema(
    KEYED_ENV,
    ["coverage"],
    auth={"openapi": {"bearer": {"bearer": KEY}, "apiKey": {"api_key": KEY}}},
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    """A few real files of each type the upload routes take, by media type."""
    folder = tmp_path_factory.mktemp("media")
    return {
        "image/jpeg": [
            write_jpeg(folder / "red.jpg", size=(48, 32)).read_bytes(),
            write_jpeg(folder / "grey.jpg", size=(20, 30), mode="L").read_bytes(),
        ],
        "image/png": [
            write_png(folder / "clear.png", size=(32, 24)).read_bytes(),
            write_png(folder / "rgb.png", size=(16, 16), mode="RGB").read_bytes(),
        ],
        "video/mp4": [write_video(folder / "clip.mp4", seconds=1.0).read_bytes()],
    }


@pytest.fixture
def real_media(media: dict[str, list[bytes]]) -> Iterator[None]:
    """Real files of each type the file parts declare, for the fuzzing run only.

    The registry is global and read while cases are drawn; the coverage runs were built
    at collection without it, so their bodies keep the schema's own boundary values.
    """
    for media_type, files in media.items():
        schemathesis.openapi.media_type(media_type, st.sampled_from(files))
    try:
        yield
    finally:
        for media_type in media:
            MEDIA_TYPE_STRATEGIES.pop(media_type, None)


def _changes_only_a_text_fields_type(case: schemathesis.Case) -> bool:
    """Whether a negative case's only change is the JSON type of a form's text field.

    A multipart field is text on the wire whatever its JSON type (null is not sent, a
    number is its digits), so the server cannot tell: schemathesis skips these mutations
    for urlencoded forms itself, and its check for multipart ones would judge a request
    that is never sent. The files part is never such a field: the media strategies fill it.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return False
    mutations = getattr(meta.phase.data, "mutations", ())
    return bool(mutations) and all(
        mutation.operator is OperatorKind.CHANGE_TYPE
        and mutation.parameter_location is ParameterLocation.BODY
        and mutation.parameter not in (None, FILES_FIELD)
        for mutation in mutations
    )


@fuzzed.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    return not _changes_only_a_text_fields_type(case)


def _served(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/schema/openapi.json", timeout=5) as answer:
        document: dict[str, Any] = json.load(answer)
    return document


def test_the_gateways_serve_these_documents(stack: Stack) -> None:
    assert _served(stack.open_url) == _document(OPEN_ENV)
    assert _served(stack.keyed_url) == _document(KEYED_ENV)


@bounded.parametrize()
def test_examples_and_boundaries_pass_every_check(case: schemathesis.Case, stack: Stack) -> None:
    case.call_and_validate(base_url=stack.open_url)


@fuzzed.parametrize()
def test_fuzzed_requests_pass_every_check(
    case: schemathesis.Case, stack: Stack, real_media: None
) -> None:
    case.call_and_validate(base_url=stack.open_url)


@keyed.parametrize()
def test_with_api_keys_every_check_passes(case: schemathesis.Case, stack: Stack) -> None:
    case.call_and_validate(base_url=stack.keyed_url)


def test_the_document_states_the_limits_and_the_keys() -> None:
    document = _document(OPEN_ENV)
    limits = Limits()
    upload = document["components"]["requestBodies"]["Upload"]["content"]["multipart/form-data"]
    files = upload["schema"]["properties"]["files"]
    # An upload without a file part is refused: the schema no longer calls it valid.
    assert (files["minItems"], files["maxItems"]) == (1, limits.max_images)
    assert upload["schema"]["properties"]["prompt"]["maxLength"] == limits.max_prompt_chars
    assert upload["encoding"]["files"]["contentType"] == "image/jpeg, image/png, video/mp4"
    # Last-Modified is an HTTP date, not an RFC 3339 date-time.
    docs = document["paths"]["/api/docs"]["get"]["responses"]["200"]
    assert "format" not in docs["headers"]["Last-Modified"]["schema"]
    assert "security" not in document and document["paths"]["/healthz"]["get"]["security"] == []
    keyed = _document(KEYED_ENV)
    assert keyed["security"] == [{"bearer": []}, {"apiKey": []}]
    assert keyed["paths"]["/metrics"]["get"]["security"] == []


def test_the_fuzzing_left_no_upload_file_behind(stack: Stack, uploads: Path) -> None:
    # Runs after the fuzzing (pytest keeps file order): every temp upload was removed.
    assert list(uploads.iterdir()) == []
