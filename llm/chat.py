"""The small protocol every chat model backend implements, and its result value."""

from __future__ import annotations

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

    async def complete(
        self, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float
    ) -> Completion:
        """Return the model's answer; raise a `llm.errors.ModelError` subclass on failure."""
        ...
