"""Which model backend a service talks to, read from settings, built at start-up.

``openai``: OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp server).
``local``: the embedded offline default, no key and no network: llama.cpp's own
llama-server at ``IMGSTORY_LOCAL_SERVER_URL`` (one batched engine for every service;
`make run` and compose start it, see llm.engine), else llama.cpp in this process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bus.settings import Env, SettingsError
from llm.chat import ChatModel, ModelProfile
from llm.llama_server import LlamaServerChat, build_llama_server_chat
from llm.openai_chat import OpenAIChat, build_openai_client

if TYPE_CHECKING:
    from llm.llama_chat import LlamaChat

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
PROVIDERS = ("openai", "local")
LOCAL_SERVER_TIMEOUT = 900.0  # seconds per generation on a local engine
LOCAL_SERVER_WAIT = 300.0  # seconds a service waits at start-up for the engine to load


@dataclass(frozen=True)
class ModelSettings:
    provider: str = "local"
    model: str = DEFAULT_OPENAI_MODEL  # the OpenAI model name
    api_key: str | None = None
    base_url: str | None = None  # any OpenAI-compatible server: vLLM, Ollama, llama.cpp
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 2
    local_model: str | None = None  # a GGUF path; None: the bundled Qwen2.5 1.5B Instruct
    local_mmproj: str | None = None  # a vision projector GGUF for local_model
    local_context: int = 4096
    local_threads: int | None = None  # None: one per core
    local_server: str | None = None  # a llama-server's URL; None: llama.cpp in process

    @property
    def backend(self) -> type[OpenAIChat | LlamaServerChat | LlamaChat]:
        """The ChatModel class these settings build (see build_chat)."""
        if self.provider == "openai":
            return OpenAIChat
        if self.local_server:
            return LlamaServerChat
        # Imported here: the OpenAI path must not pay for llama.cpp.
        from llm.llama_chat import LlamaChat

        return LlamaChat

    @property
    def profile(self) -> ModelProfile:
        """What the backend these settings build declares its model to be, known before
        it is built (whether it sees images, only once it is)."""
        return self.backend.profile

    @property
    def queues_calls(self) -> bool:
        """True when calls run one at a time (llama.cpp in this process), so sending
        several at once only queues them."""
        return self.profile.one_at_a_time

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise SettingsError(
                f"IMGSTORY_PROVIDER must be one of {', '.join(PROVIDERS)}, not {self.provider!r}"
            )
        if self.local_mmproj and not self.local_model:
            raise SettingsError(
                "IMGSTORY_LOCAL_MMPROJ needs IMGSTORY_LOCAL_MODEL (the matching GGUF)"
            )


def model_settings(env: Mapping[str, str], model_variable: str) -> ModelSettings:
    """ModelSettings from an environment mapping; ``model_variable`` names the OpenAI model.

    The provider defaults to ``openai`` when a key or a base URL is set, else ``local``.
    """
    read = Env(env)
    api_key = read.optional("OPENAI_API_KEY")
    base_url = read.optional("OPENAI_BASE_URL")
    default_provider = "openai" if api_key or base_url else "local"
    threads = read.integer("IMGSTORY_LOCAL_THREADS", 0, minimum=0)
    return ModelSettings(
        provider=read.choice("IMGSTORY_PROVIDER", default_provider, PROVIDERS),
        model=read.text(model_variable, DEFAULT_OPENAI_MODEL),
        api_key=api_key,
        base_url=base_url,
        timeout=read.number("IMGSTORY_OPENAI_TIMEOUT", ModelSettings.timeout, positive=True),
        max_retries=read.integer(
            "IMGSTORY_OPENAI_MAX_RETRIES", ModelSettings.max_retries, minimum=0, maximum=10
        ),
        local_model=read.optional("IMGSTORY_LOCAL_MODEL"),
        local_mmproj=read.optional("IMGSTORY_LOCAL_MMPROJ"),
        local_context=read.integer(
            "IMGSTORY_LOCAL_CONTEXT", ModelSettings.local_context, minimum=256
        ),
        local_threads=threads or None,  # 0 or unset: one per core
        local_server=read.optional("IMGSTORY_LOCAL_SERVER_URL"),
    )


def build_chat(settings: ModelSettings) -> ChatModel:
    """The chat model the settings describe. Local models load here (seconds): call it
    from a thread when an event loop is running. Raises llm.errors.ModelUnavailable."""
    backend = settings.backend
    if backend is OpenAIChat:
        client = build_openai_client(
            api_key=settings.api_key,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )
        return OpenAIChat(client, settings.model)
    if backend is LlamaServerChat and settings.local_server:  # (always set for it)
        # The request's deadline bounds a generation; this only catches a hung engine.
        return build_llama_server_chat(
            settings.local_server, timeout=LOCAL_SERVER_TIMEOUT, wait=LOCAL_SERVER_WAIT
        )
    # Imported here: the OpenAI path must not pay for llama.cpp.
    from llm.llama_chat import LlamaChat
    from llm.local_model import default_model_path

    path = Path(settings.local_model) if settings.local_model else default_model_path()
    return LlamaChat(
        path,
        n_ctx=settings.local_context,
        n_threads=settings.local_threads,
        mmproj_path=settings.local_mmproj,
    )
