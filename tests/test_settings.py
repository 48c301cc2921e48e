"""Settings are checked when a process starts: a bad value stops it with one clear line."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bus.settings import SettingsError
from frame_service import config as frame_config
from gateway import config as gateway_config
from story_service import config as story_config
from story_service.story import default_prompt
from translation_service import config as translation_config

ROOT = Path(__file__).resolve().parent.parent

LOADERS: dict[str, Callable[[dict[str, str]], Any]] = {
    "gateway": gateway_config.load,
    "frame_service": frame_config.load,
    "story_service": story_config.load,
    "translation_service": translation_config.load,
}


@pytest.mark.parametrize("service", list(LOADERS))
def test_no_environment_gives_the_documented_defaults(service: str) -> None:
    settings = LOADERS[service]({})
    assert settings.nats_url == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("service", "variable", "value", "words"),
    [
        ("story_service", "IMGSTORY_IMAGE_DETAIL", "ultra", "one of low, high, auto"),
        ("story_service", "IMGSTORY_STORY_MAX_TOKENS", "0", "at least 1"),
        ("story_service", "IMGSTORY_STORY_TEMPERATURE", "hot", "a number"),
        ("story_service", "IMGSTORY_STORY_IN_FLIGHT", "-2", "at least 1"),
        ("story_service", "IMGSTORY_PROVIDER", "magic", "one of openai, local"),
        ("story_service", "IMGSTORY_OPENAI_TIMEOUT", "0", "above 0"),
        ("story_service", "IMGSTORY_OPENAI_MAX_RETRIES", "-1", "at least 0"),
        ("story_service", "IMGSTORY_LOCAL_THREADS", "two", "whole number"),
        ("translation_service", "IMGSTORY_MIN_THAI_SHARE", "1.5", "at most 1"),
        ("translation_service", "IMGSTORY_TRANSLATION_MAX_TOKENS", "0", "at least 1"),
        ("translation_service", "IMGSTORY_TRANSLATION_TEMPERATURE", "nan", "finite"),
        ("gateway", "IMGSTORY_MAX_IMAGE_MB", "0", "above 0"),
        ("gateway", "IMGSTORY_MAX_IMAGES", "0", "at least 1"),
        ("gateway", "IMGSTORY_PORT", "eighty", "whole number"),
        ("gateway", "IMGSTORY_STORY_TIMEOUT", "-5", "above 0"),
        ("gateway", "IMGSTORY_MAX_FRAMES", "0", "at least 1"),
        ("frame_service", "IMGSTORY_FRAMES_IN_FLIGHT", "0", "at least 1"),
        ("frame_service", "IMGSTORY_FRAME_JPEG_QUALITY", "100", "95"),
        ("frame_service", "IMGSTORY_PERCEPTION", "perhaps", "1 or 0"),
        ("frame_service", "IMGSTORY_VIDEOS_IN_FLIGHT", "0", "at least 1"),
        ("frame_service", "IMGSTORY_VIDEO_DECODE_SECONDS", "0", "above 0"),
        ("frame_service", "IMGSTORY_VIDEO_DECODE_FRAMES", "many", "whole number"),
        ("frame_service", "IMGSTORY_MAX_DECODED_MB", "8", "at least 16"),
    ],
)
def test_a_bad_value_is_refused_at_load_naming_the_variable(
    service: str, variable: str, value: str, words: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        LOADERS[service]({variable: value})
    assert variable in str(caught.value) and words in str(caught.value)


def test_mmproj_without_its_model_is_refused() -> None:
    with pytest.raises(SettingsError, match="IMGSTORY_LOCAL_MODEL"):
        story_config.load({"IMGSTORY_LOCAL_MMPROJ": "/x.gguf"})


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("story_service", "IMGSTORY_IMAGE_DETAIL", "ultra"),
        ("translation_service", "IMGSTORY_TRANSLATION_MAX_TOKENS", "0"),
        ("frame_service", "IMGSTORY_FRAMES_IN_FLIGHT", "none"),
        ("gateway", "IMGSTORY_PORT", "eighty"),
    ],
)
async def test_a_process_with_a_bad_setting_exits_at_once_with_one_line(
    module: str, variable: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMGSTORY_"))}
    # Nothing listens here: the process must stop before it tries to connect.
    env.update({"NATS_URL": "nats://127.0.0.1:9", "PYTHONPATH": str(ROOT), variable: value})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "refusing to start" in lines[0] and variable in lines[0]
    assert "Traceback" not in stderr.decode()


SOURCE_PACKAGES = (
    "contracts",
    "bus",
    "gateway",
    "frame_service",
    "story_service",
    "translation_service",
    "llm",
    "model_files",
    "scripts",
)
VARIABLE = re.compile(r"\"((?:IMGSTORY|OPENAI|NATS|XDG|OTEL)_[A-Z0-9_]+)\"")


def test_the_docs_document_every_variable_the_code_reads() -> None:
    read = {
        name
        for package in SOURCE_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for name in VARIABLE.findall(path.read_text(encoding="utf-8"))
    }
    assert {"NATS_URL", "IMGSTORY_IMAGE_DETAIL", "IMGSTORY_FRAME_JPEG_QUALITY"} <= read
    # The README and the documents it links, every one (docs/configuration.md has the table).
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert ROOT / "docs" / "configuration.md" in pages
    readme = pages[0].read_text(encoding="utf-8")
    assert [page.name for page in pages[1:] if f"(docs/{page.name})" not in readme] == []
    docs = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    assert sorted(name for name in read if f"`{name}`" not in docs) == []


def test_the_story_length_follows_the_backend_and_the_setting() -> None:
    remote = story_config.load({"OPENAI_API_KEY": "sk-x"})
    local = story_config.load({})
    assert (remote.words, remote.max_tokens) == ((150, 250), 700)
    assert (local.words, local.max_tokens) == ((120, 180), 320)
    assert story_config.load({"IMGSTORY_STORY_WORDS": "80-120"}).words == (80, 120)
    assert "Aim for 120 to 180 words" in default_prompt(local.words)
    for bad in ("120", "200-100", "a-b", "5-10"):
        with pytest.raises(SettingsError, match="IMGSTORY_STORY_WORDS"):
            story_config.load({"IMGSTORY_STORY_WORDS": bad})
