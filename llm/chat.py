"""The small protocol every chat model backend implements, and its result value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


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
    ) -> Completion:
        """Return the model's answer; raise a `llm.errors.ModelError` subclass on failure.

        `script="thai"` asks the backend to keep the answer in Thai script where it can
        enforce that (a local model constrains its sampling; a remote API relies on the
        prompt). `on_text`, if given, may be called with each new piece of the answer
        while it is generated, possibly from another thread; backends that cannot
        stream may never call it. The returned Completion always holds the whole text.
        """
        ...
