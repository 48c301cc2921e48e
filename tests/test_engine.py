"""The offline default's engine: a real llama-server built by `make engine`, serving the
tiny model, reached through the OpenAI-compatible client like any other provider."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import pytest

from bus.settings import SettingsError
from contracts.text import split_paragraphs
from llm import engine
from llm.engine import EngineSettings
from llm.llama_server import (
    REPEAT_PENALTY,
    LlamaServerChat,
    answer_grammar,
    build_llama_server_chat,
    server_root,
)
from llm.provider import ModelSettings, build_chat, model_settings
from llm.script_mask import THAI_TEXT
from translation_service.translate import thai_share

STORY_REQUEST = [{"role": "user", "content": "Once upon a time"}]
THAI_REQUEST = [{"role": "user", "content": "กาลครั้งหนึ่งนานมาแล้ว มีแมวตัวหนึ่ง"}]
# Greedily, this model answers it in several paragraphs parted by blank lines.
THREE_PARAGRAPHS = [
    {
        "role": "user",
        "content": "Write two short paragraphs about the sea, with a blank line between them.",
    }
]


def test_the_engine_runs_batched_slots_over_one_shared_context() -> None:
    settings = EngineSettings(port=9001, slots=4, context=16384, threads=2, model="/m/q.gguf")

    args = engine.command(settings, binary=Path("/opt/llama-server"))

    assert args[0] == "/opt/llama-server"

    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert value("--model") == "/m/q.gguf"
    assert (value("--parallel"), value("--ctx-size"), value("--threads")) == ("4", "16384", "2")
    assert "--kv-unified" in args and "--no-webui" in args
    assert settings.url == "http://127.0.0.1:9001/v1"


def test_engine_settings_come_from_the_environment() -> None:
    settings = engine.load({"IMGSTORY_ENGINE_PORT": "9100", "IMGSTORY_ENGINE_SLOTS": "2"})
    assert (settings.port, settings.slots, settings.context) == (9100, 2, 16384)
    with pytest.raises(SettingsError, match="IMGSTORY_ENGINE_SLOTS"):
        engine.load({"IMGSTORY_ENGINE_SLOTS": "0"})
    with pytest.raises(SettingsError, match="IMGSTORY_LOCAL_MODEL"):
        engine.load({"IMGSTORY_LOCAL_MMPROJ": "/m/proj.gguf"})


def test_a_named_engine_makes_local_calls_concurrent() -> None:
    in_process = model_settings({}, "IMGSTORY_STORY_MODEL")
    served = model_settings({"IMGSTORY_LOCAL_SERVER_URL": "http://e:8081/v1"}, "X")
    remote = model_settings({"OPENAI_API_KEY": "sk-x"}, "X")
    assert (in_process.provider, served.provider, remote.provider) == ("local",) * 2 + ("openai",)
    assert [s.queues_calls for s in (in_process, served, remote)] == [True, False, False]


@pytest.mark.parametrize(
    ("script", "max_paragraphs", "root"),
    [
        ("thai", None, "root ::= para (gap para)* gap?"),
        ("thai", 1, "root ::= para gap?"),
        (None, 3, "root ::= para (gap para){0,2} gap?"),
        (None, None, "root ::= para (gap para)* gap?"),
    ],
)
def test_the_grammar_keeps_the_script_and_the_paragraph_count(
    script: str | None, max_paragraphs: int | None, root: str
) -> None:
    grammar = answer_grammar(script, max_paragraphs)
    assert grammar.splitlines()[0] == root
    if script == "thai":
        assert "\\u0E01-\\u0E3A" in grammar
        assert "para ::= line\n" in grammar  # one line a paragraph: no room for notes
    else:
        assert r"line ::= [!-\"$-)+-;=?-Z" in grammar  # no # * < > [ ]


def test_an_english_answer_may_hold_the_casts_names_in_their_own_script() -> None:
    grammar = answer_grammar(None, None, ["ยายสมศรี", "Pumpkin", 'Ma "ศรี"'])
    assert 'name ::= "ยายสมศรี" | "Ma \\"ศรี\\""' in grammar.splitlines()
    assert "line ::= ([!-" in grammar and "| name)*" in grammar
    # A name English prose holds anyway needs nothing; a Thai answer takes none.
    assert "name" not in answer_grammar(None, None, ["Pumpkin"])
    assert "name" not in answer_grammar("thai", None, ["ยายสมศรี"])


slow = pytest.mark.slow


@pytest.fixture
def chat(gemma_engine: str) -> LlamaServerChat:
    return build_llama_server_chat(gemma_engine, timeout=120, wait=10)


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{server_root(url)}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^llamacpp:{name} (\S+)$", text, re.MULTILINE)
    assert found, f"the engine reports no {name}"
    return float(found.group(1))


@slow
async def test_the_engine_is_built_from_settings_and_counts_real_tokens(gemma_engine: str) -> None:
    chat = await asyncio.to_thread(
        build_chat, ModelSettings(provider="local", local_server=gemma_engine)
    )
    assert isinstance(chat, LlamaServerChat)
    assert chat.name == "gemma-3-270m-q4_k_m" and chat.profile.sees_images is False

    result = await chat.complete(STORY_REQUEST, max_tokens=16, temperature=0.0)

    assert result.usage.input_tokens > 0 and 0 < result.usage.output_tokens <= 16
    assert result.model and result.text.strip()


@slow
async def test_the_grammar_keeps_the_answer_in_thai_script(chat: LlamaServerChat) -> None:
    free = await chat.complete(STORY_REQUEST, max_tokens=40, temperature=0.0)
    thai = await chat.complete(STORY_REQUEST, max_tokens=40, temperature=0.0, script="thai")
    in_thai = await chat.complete(THAI_REQUEST, max_tokens=40, temperature=0.0, script="thai")

    # The base model continues in English by itself; the grammar allows only Thai script
    # (and the digits and punctuation Thai prose uses).
    assert not THAI_TEXT.fullmatch(free.text)
    assert THAI_TEXT.fullmatch(thai.text) and THAI_TEXT.fullmatch(in_thai.text)
    assert thai_share(in_thai.text) >= 0.95


@slow
async def test_the_engine_ends_the_answer_at_the_paragraph_limit(qwen_engine: str) -> None:
    chat = await asyncio.to_thread(build_llama_server_chat, qwen_engine, timeout=300, wait=30)
    unbounded = await chat.complete(THREE_PARAGRAPHS, max_tokens=150, temperature=0.0)
    bounded = await chat.complete(
        THREE_PARAGRAPHS, max_tokens=150, temperature=0.0, max_paragraphs=1
    )

    assert len(split_paragraphs(unbounded.text)) > 1
    assert len(split_paragraphs(bounded.text)) == 1
    # The server stopped there, so its token count is of what was written, not cut.
    assert bounded.usage.output_tokens < unbounded.usage.output_tokens


SENTENCE = "the old grey cat sat on the warm mat by the door."
SAY_IT_AGAIN = [
    {"role": "user", "content": f"Write the sentence '{SENTENCE}' ten times, one per line."}
]


@slow
async def test_the_engine_is_kept_from_repeating_itself(qwen_engine: str) -> None:
    chat = await asyncio.to_thread(build_llama_server_chat, qwen_engine, timeout=300, wait=30)
    kept = await chat.complete(SAY_IT_AGAIN, max_tokens=120, temperature=0.0)
    # The same request without the DRY sampler's fields: the model does as it is told.
    plain = chat._client.chat.completions.create(
        model=chat.model,
        messages=SAY_IT_AGAIN,  # type: ignore[arg-type]
        max_tokens=120,
        temperature=0.0,
        extra_body={"repeat_penalty": REPEAT_PENALTY},
    )
    looped = (await plain).choices[0].message.content or ""

    assert looped.lower().count(SENTENCE) >= 3
    assert kept.text.lower().count(SENTENCE) <= 1


MARKUP_REQUEST = [
    {
        "role": "user",
        "content": "<transcript>**Title:** [The scene opens] # 落叶 ใบไม้\n\n<transcript>**Title:** 落",
    }
]


@slow
async def test_the_grammar_keeps_markup_and_other_scripts_out_of_english(
    chat: LlamaServerChat,
) -> None:
    # The tiny base model continues what it is given: tags, markdown, brackets, Chinese.
    answer = await chat.complete(MARKUP_REQUEST, max_tokens=60, temperature=0.0)

    assert answer.text.strip()
    assert not set("<>*#[]") & set(answer.text)
    chinese = [{"role": "user", "content": "秋天的落叶。春天的花。夏天的雨。冬天的"}]
    answer = await chat.complete(chinese, max_tokens=30, temperature=0.0)
    assert answer.text.strip()
    assert all(c.isspace() or ord(c) < 0x250 or "\u2013" <= c <= "\u2026" for c in answer.text)


@slow
async def test_concurrent_requests_are_decoded_together(
    chat: LlamaServerChat, gemma_engine: str
) -> None:
    decodes_before = metric(gemma_engine, "n_decode_total")
    heard: dict[str, list[float]] = {"a": [], "b": []}
    loop = asyncio.get_running_loop()

    async def ask(key: str) -> None:
        await chat.complete(
            STORY_REQUEST,
            max_tokens=48,
            temperature=0.8,
            on_text=lambda _piece: heard[key].append(loop.time()),
        )

    await asyncio.gather(ask("a"), ask("b"))

    a, b = heard["a"], heard["b"]
    assert a and b
    # Each answer was being written while the other was: the two streams interleave.
    assert min(a) < max(b) and min(b) < max(a)
    # Two slots per decode call: fewer calls than the tokens of both answers.
    assert metric(gemma_engine, "n_busy_slots_per_decode") > 1.0
    assert metric(gemma_engine, "n_decode_total") - decodes_before < len(a) + len(b)


@slow
async def test_a_cancelled_call_stops_its_generation(
    chat: LlamaServerChat, gemma_engine: str
) -> None:
    started = asyncio.Event()
    call = asyncio.create_task(
        chat.complete(
            STORY_REQUEST, max_tokens=2000, temperature=0.8, on_text=lambda _: started.set()
        )
    )
    await asyncio.wait_for(started.wait(), 60)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    # The server notices the closed connection and frees the slot long before 2000 tokens.
    for _ in range(100):
        if metric(gemma_engine, "requests_processing") == 0:
            break
        await asyncio.sleep(0.1)
    assert metric(gemma_engine, "requests_processing") == 0
    predicted = metric(gemma_engine, "tokens_predicted_total")
    await asyncio.sleep(0.5)
    assert metric(gemma_engine, "tokens_predicted_total") == predicted


@slow
async def test_the_engine_writes_a_thai_name_in_english_only_when_it_is_the_casts(
    chat: LlamaServerChat,
) -> None:
    asked = [{"role": "user", "content": "Repeat exactly: Grandma ยายสมศรี smiled."}]
    named = await chat.complete(asked, max_tokens=24, temperature=0.0, names=["ยายสมศรี"])
    plain = await chat.complete(asked, max_tokens=24, temperature=0.0)
    assert "ยายสมศรี" in named.text, named.text
    assert not re.search("[\u0e00-\u0e7f]", plain.text), plain.text
