"""The small protocol every chat model backend implements, its result value, and what
each backend declares its model to be."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from contracts.messages import Usage


@dataclass(frozen=True)
class Completion:
    """One answer from a chat model, with the tokens it cost."""

    text: str
    usage: Usage
    model: str


@dataclass(frozen=True)
class ModelProfile:
    """What a backend's model is, declared by the backend, so that callers adapt to it
    instead of guessing from the provider's name."""

    # Image_url parts reach the model; otherwise callers describe pictures in text.
    sees_images: bool = False
    # A small model (the offline default's 1.5B class) that needs short, simple prompts:
    # it writes a shorter story, translates a paragraph without the earlier ones (it
    # would translate them into its answer), is told how each name is spelt, has its
    # translator's notes cut off, and is asked a second time the way it was asked the
    # first (it translates an explained correction into its answer).
    small: bool = False
    # Calls run one at a time (llama.cpp in this process): several sent at once queue.
    one_at_a_time: bool = False


class ChatModel(Protocol):
    """A chat model that answers OpenAI Chat Completions style messages.

    `messages` use the Chat Completions format: each is {"role": ..., "content": ...}
    where content is a string or a list of parts such as {"type": "text", "text": ...}
    and {"type": "image_url", "image_url": {"url": data_url, "detail": ...}}.
    """

    name: str
    profile: ModelProfile

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        script: str | None = None,
        on_text: Callable[[str], None] | None = None,
        max_paragraphs: int | None = None,
        names: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
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
        `contracts.text.cut_paragraphs`). Lines within a paragraph are not limited.
        `names` (the cast's names) may be written as given whatever their script, where a
        backend constrains the answer's characters (an English story holding ยายสมศรี).
        `json_schema` asks for a JSON answer following it where the backend can (a
        provider's structured output); a backend that cannot answers as it would without.
        """
        ...
