"""Real processes: each service and the gateway as `python -m`, the seed doc's examples verbatim."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import nats
import pytest

from bus import rpc
from contracts.messages import Translate, Translated
from contracts.subjects import SERVICES, TRANSLATE, ping_subject
from devstack.gateway import running_gateway
from devstack.processes import ROOT, ProcessGroup, free_port, service_env
from devstack.services import fake_model_settings
from tests.media import sample_photo, sample_video
from translation_service import config as translation_config
from translation_service.service import start_service as start_translation

SEED_DOC = ROOT / "docs" / "seed-api-doc.txt"


def seed_curl_examples() -> list[str]:
    """Every curl command in the seed API document, continuation lines joined."""
    lines = SEED_DOC.read_text().splitlines()
    commands, current = [], None
    for line in lines:
        if line.startswith("curl "):
            current = line
        elif current is not None:
            current += "\n" + line
        if current is not None and not line.endswith("\\"):
            commands.append(current)
            current = None
    return commands


def seed_python_example() -> str:
    text = SEED_DOC.read_text()
    start = text.index("import requests")
    end = text.index("print(result['token_usage'])") + len("print(result['token_usage'])")
    return text[start:end]


async def wait_for_ping(url: str, service_name: str, timeout: float = 20) -> dict:
    nc = await nats.connect(url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        spec = next(s for s in SERVICES if s.name == service_name)
        while True:
            try:
                msg = await nc.request(ping_subject(spec), b"", timeout=0.5)
                return json.loads(msg.data)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("module", "service_name"),
    [
        ("frame_service", "imgstory-frames"),
        ("story_service", "imgstory-story"),
        ("translation_service", "imgstory-translation"),
    ],
)
async def test_service_runs_as_a_process_answers_ping_and_stops_cleanly(
    empty_nats_url, fake_openai, module, service_name
):
    # Leaving the group sends SIGTERM and waits up to 20 s (a SIGKILL after is no clean stop).
    async with ProcessGroup(grace=20) as group:
        process = group.python(module, module, env=service_env(empty_nats_url, fake_openai))
        ping = await wait_for_ping(empty_nats_url, service_name)
        assert ping["name"] == service_name and ping["type"] == "io.nats.micro.v1.ping_response"
    assert process.returncode == 0


async def test_replicas_share_the_load(empty_nats_url, fake_openai):
    settings = replace(
        translation_config.load({}), model=fake_model_settings(fake_openai, "fake-translate")
    )
    clients = [await nats.connect(empty_nats_url) for _ in range(3)]
    replicas = [await start_translation(c, settings) for c in clients[:2]]
    try:
        replies = await asyncio.gather(
            *(
                rpc.call(
                    clients[2], TRANSLATE, Translate(request_id=str(i), text="A story."), timeout=10
                )
                for i in range(24)
            )
        )
        assert all(isinstance(r, Translated) for r in replies)
        served = [r.service.stats().endpoints[0].num_requests for r in replicas]
        assert sum(served) == 24
        assert all(n > 0 for n in served), served
    finally:
        for replica in replicas:
            await replica.stop()
        for client in clients:
            await client.close()


@pytest.fixture
async def gateway_process(nats_url, services, tmp_path):
    """`python -m gateway` on port 8000 (the seed doc's base URL) or, if taken, a free one."""
    port = 8000
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        port = free_port()
    except OSError:
        pass
    async with running_gateway(nats_url, port):
        yield f"http://localhost:{port}"


async def run_shell(command: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None  # communicate() waited for the exit
    return process.returncode, out.decode(), err.decode()


async def test_seed_doc_curl_examples_run_verbatim(gateway_process, openai, blob_store, tmp_path):
    media = {
        "/path/to/your/image.jpg": sample_photo("rocket.jpg"),
        "/path/to/image1.jpg": sample_photo("rocket.jpg"),
        "/path/to/image2.jpg": sample_photo("coffee.png"),
        "/path/to/image3.jpg": sample_photo("chelsea.png"),
        "/path/to/video.mp4": sample_video("bigbuckbunny.mp4"),
    }
    commands = seed_curl_examples()
    assert len(commands) == 4
    for command in commands:
        # Only the placeholders change: paths to real media, and the port if 8000 was taken.
        for placeholder, path in media.items():
            command = command.replace(placeholder, shlex.quote(str(path)))
        command = command.replace("http://localhost:8000", gateway_process)
        code, out, err = await run_shell(command + " --silent --show-error", tmp_path)
        assert code == 0, err
        body = json.loads(out)
        assert set(body) >= {"english", "thai", "token_usage"}, out
        assert body["token_usage"]["total_tokens"] == (
            body["token_usage"]["input_tokens"] + body["token_usage"]["output_tokens"]
        )
    images_sent = [len(r.image_urls) for r in openai.requests if r.image_urls]
    assert images_sent[:3] == [1, 1, 3] and images_sent[3] >= 2


async def test_seed_doc_python_example_runs_verbatim(gateway_process, openai, blob_store, tmp_path):
    (tmp_path / "image.jpg").write_bytes(sample_photo("rocket.jpg").read_bytes())
    script = seed_python_example().replace("http://localhost:8000", gateway_process)
    (tmp_path / "example.py").write_text(script)
    code, out, err = await run_shell(f"{shlex.quote(sys.executable)} example.py", tmp_path)
    assert code == 0, err
    # It prints the English story, the Thai story, then the usage dict.
    assert "a story about 1 picture" in out
    assert re.search(r"[\u0e00-\u0e7f]{10}", out)
    assert "'total_tokens'" in out.strip().splitlines()[-1]


async def test_gateway_pages_and_openapi(gateway):
    async with gateway() as client:
        page = await client.get("/")
        docs = await client.get("/api/docs")
        schema = (await client.get("/schema/openapi.json")).json()
    assert page.status_code == 200 and 'name="files"' in page.text
    assert docs.status_code == 200
    for example in seed_curl_examples():
        assert example in docs.text
    for line in seed_python_example().splitlines():
        assert line in docs.text
    analyze = schema["paths"]["/analyze"]["post"]
    # Both upload routes refer to one shared body.
    shared = analyze["requestBody"]["$ref"].removeprefix("#/components/requestBodies/")
    body = schema["components"]["requestBodies"][shared]["content"]["multipart/form-data"]["schema"]
    # The seed's two fields, required as the seed says; `keep` (jobs), `length` and `cast`
    # (steering the story) are optional additions.
    assert set(body["properties"]) == {"files", "prompt", "keep", "length", "cast"}
    assert body["required"] == ["files"]
    assert {"200", "400", "422", "429", "500", "503"} <= set(analyze["responses"])


async def test_page_checks_match_the_server_limits(gateway, gateway_settings):
    limits = replace(gateway_settings.limits, max_images=3, max_prompt_chars=500)
    async with gateway(replace(gateway_settings, limits=limits)) as client:
        page = (await client.get("/")).text
    assert 'data-max-images="3"' in page and 'data-max-prompt="500"' in page
    assert 'maxlength="500"' in page and 'data-max-image-mb="10"' in page
