"""Finding the embedded model: assembling the GGUF from its part packages, and missing files.

The assembly tests build small fake part packages; only the last two touch the real model's path.
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.processes import ROOT
from llm.errors import ModelUnavailable
from llm.llama_chat import LlamaChat
from llm.local_model import ModelPart, assemble_model
from model_files import assemble as model_files_assemble

# --- assembling a model from part packages (small fake parts) ---------------------------------


def make_parts(root: Path, name: str, slices: list[bytes]) -> list[ModelPart]:
    """Write one importable package per slice under `root`, as the model wheels do."""
    parts = []
    for number, data in enumerate(slices, start=1):
        module = f"{name}_part{number}"
        package = root / module
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{number:02d}.bin").write_bytes(data)
        parts.append(
            ModelPart(
                f"{name.replace('_', '-')}-part{number}",
                "9.9.9",
                module,
                f"data/part{number:02d}.bin",
            )
        )
    importlib.invalidate_caches()
    return parts


@pytest.fixture
def fake_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> tuple[list[ModelPart], bytes]:
    slices = [bytes([number]) * (300_000 + number) for number in range(1, 5)]
    name = f"fakemodel_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return make_parts(tmp_path / "site", name, slices), b"".join(slices)


def assemble(parts: list[ModelPart], whole: bytes, target: Path) -> Path:
    return assemble_model(parts, target, size=len(whole), sha256=hashlib.sha256(whole).hexdigest())


def test_parts_are_joined_in_order_and_verified(
    fake_parts: tuple[list[ModelPart], bytes], tmp_path: Path
) -> None:
    parts, whole = fake_parts
    target = tmp_path / "cache" / "model.gguf"

    path = assemble(parts, whole, target)

    assert path == target
    assert path.read_bytes() == whole
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "model.gguf",
        "model.gguf.lock",
        "model.gguf.verified",
    ]


def test_later_calls_trust_the_stamp_but_recheck_the_size(
    fake_parts: tuple[list[ModelPart], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, whole = fake_parts
    target = tmp_path / "model.gguf"
    assemble(parts, whole, target)

    def no_hashing(path: Path) -> str:
        raise AssertionError("a verified model must not be hashed again")

    monkeypatch.setattr(model_files_assemble, "sha256_of", no_hashing)
    assert assemble(parts, whole, target) == target

    with target.open("r+b") as handle:  # a truncated file is assembled again
        handle.truncate(1000)
    assert assemble(parts, whole, target).read_bytes() == whole


def test_concurrent_assembly_never_shows_a_partial_file(
    fake_parts: tuple[list[ModelPart], bytes], tmp_path: Path
) -> None:
    parts, whole = fake_parts
    target = tmp_path / "model.gguf"
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        # Any size a reader sees must be 0 (absent) or the whole file.
        while not done.is_set():
            seen.append(target.stat().st_size if target.exists() else 0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: assemble(parts, whole, target), range(4)))
    done.set()
    watcher.join()

    assert paths == [target] * 4
    assert target.read_bytes() == whole
    assert set(seen) <= {0, len(whole)}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("model")) == [
        "model.gguf",
        "model.gguf.lock",
        "model.gguf.verified",
    ]


def test_corrupt_parts_are_rejected_and_leave_no_file(
    fake_parts: tuple[list[ModelPart], bytes], tmp_path: Path
) -> None:
    parts, whole = fake_parts
    target = tmp_path / "model.gguf"

    with pytest.raises(ModelUnavailable, match="corrupt"):
        assemble_model(parts, target, size=len(whole), sha256="0" * 64)

    assert not (tmp_path / "model.gguf").exists()
    assert [p.name for p in tmp_path.glob("model.gguf*")] == [
        "model.gguf.lock"
    ]  # no partial copy left


def test_a_missing_part_names_the_package_to_install(
    fake_parts: tuple[list[ModelPart], bytes], tmp_path: Path
) -> None:
    parts, whole = fake_parts
    missing = ModelPart(
        "imgstory-absent-part9", "1.2.3", "imgstory_absent_part9", "data/part09.bin"
    )

    with pytest.raises(ModelUnavailable) as caught:
        assemble([*parts, missing], whole, tmp_path / "model.gguf")

    message = str(caught.value)
    assert "imgstory-absent-part9" in message
    assert "pip install imgstory-absent-part9==1.2.3" in message and "make run" in message
    assert parts[0].distribution not in message


# --- the real model's files ----------------------------------------------------------------------


def test_python_m_local_model_prints_the_path(qwen_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm.local_model"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == str(qwen_path)


def test_missing_model_files_are_reported(qwen_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        LlamaChat(tmp_path / "absent.gguf")
    with pytest.raises(ModelUnavailable, match=r"projector file .* does not exist"):
        LlamaChat(qwen_path, mmproj_path=tmp_path / "absent-mmproj.gguf")
