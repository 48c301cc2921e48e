"""Which model backend a service talks to, read from settings, built at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llm.chat import ChatModel
from llm.errors import ModelUnavailable
from llm.openai_chat import OpenAIChat, build_openai_client

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"


@dataclass(frozen=True)
class ModelSettings:
    model: str = DEFAULT_OPENAI_MODEL
    api_key: str | None = None
    base_url: str | None = None  # any OpenAI-compatible server: vLLM, Ollama, llama.cpp
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 2

    @property
    def configured(self) -> bool:
        return bool(self.api_key or self.base_url)


def model_settings(env: Mapping[str, str], model_variable: str) -> ModelSettings:
    """ModelSettings from an environment mapping; ``model_variable`` names the model."""
    return ModelSettings(
        model=env.get(model_variable) or DEFAULT_OPENAI_MODEL,
        api_key=env.get("OPENAI_API_KEY") or None,
        base_url=env.get("OPENAI_BASE_URL") or None,
        timeout=float(env.get("IMGSTORY_OPENAI_TIMEOUT", ModelSettings.timeout)),
        max_retries=int(env.get("IMGSTORY_OPENAI_MAX_RETRIES", ModelSettings.max_retries)),
    )


class NoModel:
    """Answers every call with a clear 'not configured' error instead of failing at start."""

    name = "none"

    async def complete(self, messages: list[dict], *, max_tokens: int, temperature: float):
        raise ModelUnavailable(
            "no model provider is configured: set OPENAI_API_KEY (and optionally "
            "OPENAI_BASE_URL for an OpenAI-compatible server)"
        )


def build_chat(settings: ModelSettings) -> ChatModel:
    """The chat model the settings describe."""
    if not settings.configured:
        return NoModel()
    client = build_openai_client(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )
    return OpenAIChat(client, settings.model)
