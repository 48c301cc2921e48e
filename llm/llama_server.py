"""ChatModel for llama.cpp's own `llama-server`: the offline default's engine.

The engine is one more OpenAI-compatible server, so this is OpenAIChat with what
llama-server adds: a GBNF grammar that keeps an answer prose (in Thai script when asked,
never markup) and ends it after a given number of paragraphs (the server stops there itself, so its token counts
stay exact), and the model's name and vision read from the server's `/props`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePath
from typing import Any

from llm.chat import Completion, ModelProfile
from llm.errors import ModelUnavailable
from llm.openai_chat import OpenAIChat, build_openai_client
from llm.script_mask import THAI_LINE_CHARACTERS, THAI_OPENING_CHARACTERS, thai_text_layout

log = logging.getLogger(__name__)

# The characters llm.script_mask keeps Thai text to, as GBNF classes.
_THAI_FIRST = f"[{THAI_OPENING_CHARACTERS}]"
_THAI_REST = f"[{THAI_LINE_CHARACTERS}]"
REPEAT_PENALTY = 1.1
# llama.cpp's DRY sampler ("don't repeat yourself") makes a token that would extend a
# sequence already in the context less likely, the more so the longer the repeat. The
# repeat penalty looks back 64 tokens only, and the 1.5B model was seen repeating a whole
# 60-token paragraph four times in a story, and a line of Thai four times in a
# translation. A repeat of up to DRY_ALLOWED_LENGTH tokens (a name, a phrase) is free.
DRY = {"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 6, "dry_penalty_last_n": 4096}
# English prose: Latin letters (accents too), digits and the punctuation prose uses, but
# not the characters of markup: tags (the local model opened one story in four with
# "<transcript>", and closed it around the whole story once, leaving nothing),
# markdown's * and #, and the brackets of stage directions. Nor other scripts: a story
# of the benchmark had "covered in 落叶".
_PROSE_CHARACTERS = r"!-\"$-)+-;=?-Z\\^-~\u00A0-\u024F\u2013\u2014\u2018-\u201F\u2026"
_PROSE_FIRST = f"[{_PROSE_CHARACTERS}]"
_PROSE_REST = f"[ {_PROSE_CHARACTERS}]"
_PROSE_NAME = re.compile(f"[ {_PROSE_CHARACTERS}]*")  # a name English prose may hold anyway


def answer_grammar(
    script: str | None, max_paragraphs: int | None, names: Sequence[str] = ()
) -> str:
    """The GBNF grammar for a prose answer in `script` ("thai"; None: English, without markup) of at
    most `max_paragraphs` paragraphs, parted by a blank line. English may hold `names` (the
    cast's) as written, whatever their script: "ยายสมศรี" in an English story.

    Within an English paragraph line breaks are free. A Thai paragraph (a translation of
    a story's paragraph) is one line: the local model put its notes on lines of their own
    inside a paragraph ("ส่วนตัว:", "the important part of this text is..."); with no
    line break to write, it ends the paragraph instead.
    """
    thai = script == "thai"
    first, rest = (_THAI_FIRST, _THAI_REST) if thai else (_PROSE_FIRST, _PROSE_REST)
    # A blank line may follow the last paragraph allowed, but then only the end may: a
    # model about to add a paragraph (a translator's note, say) stops there.
    if max_paragraphs is None:
        root = "para (gap para)* gap?"
    elif max_paragraphs == 1:
        root = "para gap?"
    else:
        root = f"para (gap para){{0,{max_paragraphs - 1}}} gap?"
    rules = [
        f"root ::= {root}",
        'gap ::= "\\n\\n"',
        "para ::= line" if thai else 'para ::= line ("\\n" line)*',
    ]
    foreign = [name for name in dict.fromkeys(names) if not _PROSE_NAME.fullmatch(name)]
    if thai or not foreign:
        return "\n".join([*rules, f"line ::= {first} {rest}*"])
    literals = " | ".join(json.dumps(name, ensure_ascii=False) for name in foreign)
    return "\n".join(
        [*rules, f"line ::= ({first} | name) ({rest} | name)*", f"name ::= {literals}"]
    )


def sampling_fields(
    script: str | None, max_paragraphs: int | None, names: Sequence[str] = ()
) -> dict[str, Any]:
    """The fields beyond the OpenAI API every request to the engine carries: the repeat
    penalty llama.cpp in process samples with (llm.llama_chat; small models fall into loops
    without it, and llama-server's default is none), DRY, and the answer's grammar."""
    return {
        "repeat_penalty": REPEAT_PENALTY,
        **DRY,
        "grammar": answer_grammar(script, max_paragraphs, names),
    }


class LlamaServerChat(OpenAIChat):
    """OpenAIChat for a llama-server: grammar-constrained script and line count."""

    # The offline default's small model, decoding concurrent calls together (slots); it
    # sees images when the server says so (build_llama_server_chat).
    profile = ModelProfile(small=True)

    def _extra_body(
        self, script: str | None, max_paragraphs: int | None, names: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        return sampling_fields(script, max_paragraphs, names)

    def _finish(
        self, completion: Completion, script: str | None, max_paragraphs: int | None
    ) -> Completion:
        completion = super()._finish(completion, script, max_paragraphs)
        if script is None:
            return completion
        return replace(completion, text=thai_text_layout(completion.text))


def server_root(url: str) -> str:
    """A llama-server's root URL (where /health, /props and /metrics are) from its
    address, with or without the OpenAI API's /v1."""
    return url.rstrip("/").removesuffix("/v1")


def server_props(base_url: str, *, wait: float) -> dict[str, Any]:
    """The llama-server's `/props`, waiting up to `wait` seconds while it loads its model.

    Raises ModelUnavailable when it does not answer in time or is not a llama-server.
    """
    root = server_root(base_url)
    deadline = time.monotonic() + wait
    logged = False
    while True:
        try:
            with urllib.request.urlopen(f"{root}/props", timeout=5) as response:
                props: dict[str, Any] = json.load(response)
                return props
        except urllib.error.HTTPError as err:
            if err.code != 503:  # 503: still loading the model
                raise ModelUnavailable(
                    f"the local engine at {root} is not a llama-server (HTTP {err.code} on /props)"
                ) from err
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ModelUnavailable(f"the local engine at {root} did not answer within {wait:.0f} s")
        if not logged:
            log.info("waiting for the local engine at %s", root)
            logged = True
        time.sleep(0.5)


def build_llama_server_chat(base_url: str, *, timeout: float, wait: float) -> LlamaServerChat:
    """A LlamaServerChat for the llama-server at `base_url` (its /v1 API), named after
    the model file it serves. Blocks up to `wait` seconds for the server to be ready."""
    props = server_props(base_url, wait=wait)
    path = str(props.get("model_alias") or props.get("model_path") or "local-model")
    name = PurePath(path).name.removesuffix(".gguf") or "local-model"
    url = f"{server_root(base_url)}/v1"
    client = build_openai_client(
        api_key=None,
        base_url=url,
        timeout=timeout,
        # A retry would write the whole answer again on the same busy cores.
        max_retries=0,
    )
    chat = LlamaServerChat(client, name, max_tokens_field="max_tokens")
    chat.profile = replace(
        LlamaServerChat.profile, sees_images=bool((props.get("modalities") or {}).get("vision"))
    )
    log.info(
        "local engine at %s: %s, %s slots%s",
        url,
        name,
        props.get("total_slots", "?"),
        ", vision" if chat.profile.sees_images else "",
    )
    return chat
