"""The small protocol every chat model backend implements, and its result value."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from contracts.messages import PARAGRAPH_BREAK


@dataclass(frozen=True)
class Completion:
    """One answer from a chat model, with the tokens it cost."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str


class ChatModel(Protocol):
    """A chat model that answers OpenAI Chat Completions style messages.

    `messages` use the Chat Completions format: each is {"role": ..., "content": ...}
    where content is a string or a list of parts such as {"type": "text", "text": ...}
    and {"type": "image_url", "image_url": {"url": data_url, "detail": ...}}.
    """

    name: str
    # True when image_url parts reach the model; otherwise callers must describe pictures in text.
    sees_images: bool

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        script: str | None = None,
        on_text: Callable[[str], None] | None = None,
        max_paragraphs: int | None = None,
    ) -> Completion:
        """Return the model's answer; raise a `llm.errors.ModelError` subclass on failure.

        `script="thai"` asks the backend to keep the answer in Thai script where it can
        enforce that (a local model constrains its sampling; a remote API relies on the
        prompt). `on_text`, if given, may be called with each new piece of the answer
        while it is generated, possibly from another thread; backends that cannot
        stream may never call it. The returned Completion always holds the whole text.
        With `max_paragraphs`, the answer ends before a paragraph past its
        `max_paragraphs`-th: a backend that watches its output stops generating there
        (nobody reads the rest), and the returned text never holds more (see
        `cut_paragraphs`). Lines within a paragraph are not limited.
        """
        ...


def paragraph_cut(text: str, max_paragraphs: int) -> int | None:
    """Where `text` must end to keep only its first `max_paragraphs` paragraphs (blocks
    between blank lines, as contracts.messages.split_paragraphs counts them), or None
    when it has no more. A paragraph counts once it holds a visible character."""
    seen = 0
    start = 0
    for gap in [*PARAGRAPH_BREAK.finditer(text), None]:
        end = len(text) if gap is None else gap.start()
        if text[start:end].strip():
            seen += 1
            if seen > max_paragraphs:
                return start
        if gap is not None:
            start = gap.end()
    return None


def cut_paragraphs(text: str, max_paragraphs: int | None) -> str:
    """`text` with no more than `max_paragraphs` paragraphs (all of it when None)."""
    if max_paragraphs is None:
        return text
    cut = paragraph_cut(text, max_paragraphs)
    return text if cut is None else text[:cut].rstrip()


def room_for_another(deadline: float | None, took: float) -> bool:
    """Whether a call like one that took `took` seconds can still finish before
    `deadline` (a `time.time()` instant; None: no deadline)."""
    return deadline is None or time.time() + took < deadline
