"""How fast the offline engine decodes: one sequence, then 2 and 4 at once, with and without its grammar.

Starts llama-server (llm.engine, the bundled model, 4 slots, a thread per core) on a free
port and asks it for fixed-length answers (--tokens, 160) at temperature 0.7, sampled as
the services ask (llm.llama_server.sampling_fields): an English story and a Thai
translation, each without and with the grammar the services send, then 2 and 4 English
stories at once without it. Prints the engine's own timings: tokens per second per
sequence and in total, and the total's ratio to one sequence alone. On a CPU the ratio
says how much batching gains; one request of the pipeline already runs its story and
paragraph translations side by side.

Run: make bench-engine   (or .venv/bin/python -m bench.engine --tokens 160)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devstack.engine import running_engine
from llm import engine
from llm.llama_server import sampling_fields
from llm.local_model import default_model_path

STORY = [
    {"role": "system", "content": "You are a storyteller."},
    {
        "role": "user",
        "content": "Write a 300-word story about a grey cat in a harbour town at dawn.",
    },
]
THAI = [
    {
        "role": "system",
        "content": "Translate the user's English text into Thai. Answer with the Thai only.",
    },
    {
        "role": "user",
        "content": "The grey cat walked along the harbour wall at dawn. Fishermen were mending "
        "their nets, and the smell of salt and diesel hung in the cold air. She stopped by a "
        "blue boat and waited for the old man who always saved her a sardine.",
    },
]


def ask(
    url: str, messages: list[dict[str, str]], tokens: int, script: str | None, grammar: bool
) -> dict[str, Any]:
    """One chat completion sampled as the services ask for `script` (without the grammar
    unless `grammar`); the server's answer, with its `timings` and `usage`."""
    fields = sampling_fields(script, None)
    if not grammar:
        del fields["grammar"]
    body = {"messages": messages, "max_tokens": tokens, "temperature": 0.7, **fields}
    request = urllib.request.Request(
        f"{url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def at_once(url: str, count: int, tokens: int) -> tuple[list[dict[str, Any]], float]:
    """`count` English stories asked at once; the answers and the wall seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(lambda _: ask(url, STORY, tokens, None, False), range(count)))
    return answers, time.perf_counter() - started


def main(tokens: int) -> None:
    with tempfile.TemporaryDirectory(prefix="imgstory-bench-engine-") as tmp:
        with running_engine(default_model_path(), Path(tmp)) as settings:
            url = settings.url
            ask(url, STORY, 16, None, False)  # warm: the first call pays for loading pages
            print(
                f"engine {engine.binary_path().name}: {settings.slots} slots, answers of {tokens} tokens"
            )
            alone = 0.0
            cases = [
                ("English, no grammar", STORY, None, False),
                ("English, prose grammar", STORY, None, True),
                ("Thai, no grammar", THAI, "thai", False),
                ("Thai, Thai grammar", THAI, "thai", True),
            ]
            for label, messages, script, grammar in cases:
                timings = ask(url, messages, tokens, script, grammar)["timings"]
                speed = timings["predicted_per_second"]
                alone = alone or speed
                print(
                    f"  {label:<24} {timings['predicted_n']:>4} tokens at {speed:5.1f} tok/s "
                    f"(prompt {timings['prompt_n']} at {timings['prompt_per_second']:.0f} tok/s)"
                )
            for count in (2, 4):
                answers, wall = at_once(url, count, tokens)
                produced = sum(a["usage"]["completion_tokens"] for a in answers)
                each = ", ".join(f"{a['timings']['predicted_per_second']:.1f}" for a in answers)
                print(
                    f"  {count} English at once        {produced:>4} tokens in {wall:5.1f} s = "
                    f"{produced / wall:5.1f} tok/s in total ({produced / wall / alone:.2f}x one); "
                    f"each {each}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=160, help="tokens per answer (160)")
    main(parser.parse_args().tokens)
