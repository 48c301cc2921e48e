"""The translation endpoint: English story in, Thai story and its usage out."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from bus.server import Server
from contracts.messages import FailureCode, Translate, Translated
from contracts.subjects import BY_PARAGRAPH, TRANSLATE, TRANSLATION
from llm.chat import ChatModel
from llm.errors import ModelRejected, ModelUnavailable, RateLimited
from llm.provider import build_chat
from translation_service.config import Settings
from translation_service.names import NameSpeller
from translation_service.translate import NotThai, translate_to_thai

ERRORS = {
    RateLimited: FailureCode.RATE_LIMITED,
    ModelUnavailable: FailureCode.UPSTREAM_UNAVAILABLE,
    # The model failed to write Thai even when told twice: its failure, not the user's.
    NotThai: FailureCode.UPSTREAM_UNAVAILABLE,
    ModelRejected: FailureCode.UNPROCESSABLE,
}


class Translator:
    def __init__(self, chat: ChatModel, settings: Settings) -> None:
        self.chat = chat
        self.settings = settings
        self.small = chat.profile.small
        # The small model sees no earlier paragraphs, so it is told how each name is spelt.
        self.speller = NameSpeller(chat) if self.small else None

    async def translate(self, request: Translate) -> Translated:
        if request.target_language != "th":
            raise ValueError(f"cannot translate into {request.target_language!r}: only 'th'")
        thai = await translate_to_thai(
            self.chat,
            request.text,
            # The 1.5B local model translates the earlier paragraphs it is shown as
            # context into its answer (and their prompt costs the CPU the story needs):
            # it gets each paragraph on its own.
            context=None if self.small else request.context,
            min_share=self.settings.min_thai_share,
            max_tokens=self.settings.max_tokens,
            temperature=self.settings.temperature,
            trim_extra_paragraphs=self.small,
            deadline=request.deadline,
            speller=self.speller,
            explain_retry=not self.small,
            names=request.names,
        )
        return Translated(
            text=thai.text, usage=thai.usage, model=thai.model, warnings=list(thai.problems)
        )


async def start_service(nc: Client, settings: Settings, chat: ChatModel | None = None) -> Server:
    """Start the translation micro service on ``nc``; ``chat`` defaults to the configured model."""
    if chat is None:
        chat = await asyncio.to_thread(build_chat, settings.model)
    translator = Translator(chat, settings)
    # A remote provider or a batched local engine translates paragraphs side by side;
    # llama.cpp in process would queue them behind the story.
    by_paragraph = "false" if chat.profile.one_at_a_time else "true"
    server = await Server.start(nc, TRANSLATION, metadata={BY_PARAGRAPH: by_paragraph})
    await server.add(
        TRANSLATE, translator.translate, errors=ERRORS, max_in_flight=settings.max_in_flight
    )
    return server
