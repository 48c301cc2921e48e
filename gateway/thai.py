"""The Thai translation of a story, made a paragraph at a time while the story is written.

The story service publishes each paragraph as soon as it is finished; its translation
starts at once, with the title, the earlier paragraphs and whatever of their
translation is done as context. When the story's reply arrives, its text is the
authority: every paragraph of it whose translation was not started from the same
text (a paragraph never heard, or heard otherwise) is translated then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from contracts.messages import Translate, Translated, TranslationContext, Usage, split_paragraphs

log = logging.getLogger(__name__)

TranslateCall = Callable[[Translate], Coroutine[Any, Any, Translated]]

_TITLE_WORDS = 12
_SENTENCE_ENDS = (".", "!", "?", "…", '"', "”")


def is_title(paragraph: str) -> bool:
    """A story's first paragraph is its title when it is one short line, not a sentence."""
    return (
        "\n" not in paragraph
        and len(paragraph.split()) <= _TITLE_WORDS
        and not paragraph.endswith(_SENTENCE_ENDS)
    )


class StoryTranslation:
    """One request's Thai: a translation call per paragraph, all running at once.

    ``on_thai`` hears the Thai in order, a paragraph at a time, as soon as it and every
    paragraph before it are translated; ``on_start`` hears when the first call starts.
    The first failed call fails the whole (``failed`` completes with its error), and
    ``close`` stops every call still running.
    """

    def __init__(
        self,
        translate: TranslateCall,
        request_id: str,
        *,
        on_thai: Callable[[str], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self._translate = translate
        self._request_id = request_id
        self._on_thai = on_thai
        self._on_start = on_start
        self._english: dict[int, str] = {}  # what each paragraph's call was started from
        self._calls: dict[int, asyncio.Task[Translated]] = {}
        self._thai: dict[int, str] = {}
        self._shown = 0  # paragraphs handed to on_thai
        self._final: list[str] | None = None
        self.usage = Usage()  # every finished call, kept or not
        self.model = ""
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def heard(self, index: int, text: str) -> None:
        """The story service finished paragraph ``index``: translate it now."""
        if self._final is None and index not in self._calls and index >= 0:
            self._start(index, text)

    async def finish(self, story: str) -> tuple[str, int]:
        """The Thai of ``story`` (the story's final text) and how many paragraphs it has.

        Raises what a translation call raised (rpc.RemoteFailure, rpc.CallError).
        """
        paragraphs = split_paragraphs(story)
        self._final = paragraphs
        for index, paragraph in enumerate(paragraphs):
            if self._english.get(index) != paragraph:
                if index in self._calls:
                    log.info("paragraph %d changed after it was heard: translating it again", index)
                    self._calls.pop(index).cancel()
                self._start(index, paragraph)
        for index in [i for i in self._calls if i >= len(paragraphs)]:
            self._calls.pop(index).cancel()
        replies = await asyncio.gather(*(self._calls[i] for i in range(len(paragraphs))))
        return "\n\n".join(reply.text.strip() for reply in replies), len(paragraphs)

    async def close(self) -> None:
        """Stop every call still running (the request ended, or failed)."""
        running = [call for call in self._calls.values() if not call.done()]
        for call in running:
            call.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if not self.failed.done():
            self.failed.cancel()
        elif not self.failed.cancelled():
            self.failed.exception()  # the caller may have stopped listening first: read it

    def _start(self, index: int, paragraph: str) -> None:
        if not self._calls and self._on_start is not None:
            self._on_start()
        self._english[index] = paragraph
        request = Translate(
            request_id=self._request_id, text=paragraph, context=self._context(index)
        )
        call = asyncio.create_task(self._translate(request))
        self._calls[index] = call
        call.add_done_callback(lambda done: self._done(index, paragraph, done))

    def _context(self, index: int) -> TranslationContext | None:
        if index == 0:
            return None
        known = self._final or [self._english.get(i, "") for i in range(index)]
        before = [p for p in known[:index] if p]
        title = before[0] if before and is_title(before[0]) else None
        if title is not None:
            before = before[1:]
        translated = []
        for i in range(index):
            if i not in self._thai:
                break
            translated.append(self._thai[i])
        if title is not None and translated:
            translated = translated[1:]
        return TranslationContext(title=title, before=before, translated=translated)

    def _done(self, index: int, paragraph: str, call: asyncio.Task[Translated]) -> None:
        if call.cancelled():
            return
        error = call.exception()
        if error is not None:
            if not self.failed.done():
                self.failed.set_exception(error)
            return
        reply = call.result()
        self.usage += reply.usage
        self.model = reply.model
        if self._english.get(index) == paragraph and self._calls.get(index) is call:
            self._thai[index] = reply.text.strip()
            self._show()

    def _show(self) -> None:
        while self._shown in self._thai:
            if self._on_thai is not None:
                piece = self._thai[self._shown]
                self._on_thai(piece if self._shown == 0 else "\n\n" + piece)
            self._shown += 1
