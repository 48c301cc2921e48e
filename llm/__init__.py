"""Chat model backends behind one small, backend-neutral protocol."""

from llm.chat import ChatModel, Completion, ModelProfile
from llm.errors import ModelError, ModelRejected, ModelUnavailable, RateLimited
from llm.openai_chat import OpenAIChat, build_openai_client

__all__ = [
    "ChatModel",
    "Completion",
    "ModelError",
    "ModelProfile",
    "ModelRejected",
    "ModelUnavailable",
    "OpenAIChat",
    "RateLimited",
    "build_openai_client",
]
