"""Pictures and llama.cpp: refused without a vision projector, seen through a tiny one the test builds."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from llm.errors import ModelRejected, ModelUnavailable
from llm.llama_chat import LlamaChat
from tests.support.local_models import THREADS, loaded

pytestmark = pytest.mark.slow


async def test_pictures_need_a_vision_projector(qwen: LlamaChat) -> None:
    assert qwen.profile.sees_images is False
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


# --- a vision projector the test builds ---------------------------------------------------------

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
    with loaded(qwen_path, mmproj_path=projector, n_ctx=1024, seed=3) as chat:
        yield chat


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
    assert seeing_qwen.profile.sees_images is True
    without = [{**message} for message in story_request([])]

    seen = await seeing_qwen.complete(
        story_request([jpeg_data_url((200, 30, 30)), jpeg_data_url((30, 30, 200))]),
        max_tokens=4,
        temperature=0.0,
    )
    blind = await seeing_qwen.complete(without, max_tokens=4, temperature=0.0)

    assert seen.text and 0 < seen.usage.output_tokens <= 4
    # Each picture became IMAGE_TOKENS embeddings from the projector, plus its label line.
    extra = seen.usage.input_tokens - blind.usage.input_tokens
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
