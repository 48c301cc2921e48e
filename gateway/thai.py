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
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bus.rpc import CallError, RemoteFailure
from contracts.messages import Translate, Translated, TranslationContext, Usage
from contracts.text import PARAGRAPH_SEPARATOR, is_title, split_paragraphs

log = logging.getLogger(__name__)

TranslateCall = Callable[[Translate], Coroutine[Any, Any, Translated]]


class StoryTranslation:
    """One request's Thai: a translation call per paragraph, all running at once.

    A title is not worth a call of its own (the instructions would cost more than it
    does): it travels with the paragraph after it. ``on_thai`` hears the Thai in order,
    a call's worth at a time, as soon as it and everything before it are translated;
    ``on_start`` hears when the first call starts. The first failed call fails the whole
    (``failed`` completes with its error), and ``close`` stops every call still running.
    After ``finish``, ``warnings`` says which parts of the Thai may not match the English.
    """

    def __init__(
        self,
        translate: TranslateCall,
        request_id: str,
        *,
        on_thai: Callable[[str], None] | None = None,
        on_start: Callable[[], None] | None = None,
        by_paragraph: bool = True,
        names: Sequence[str] = (),
    ) -> None:
        self._translate = translate
        self._names = list(names)  # the cast's names, spelt one way throughout
        # False: the whole story in one call once it is written (a local model on the
        # CPU, which gains nothing from calls side by side).
        self._by_paragraph = by_paragraph
        self._request_id = request_id
        self._on_thai = on_thai
        self._on_start = on_start
        self._heard: dict[int, str] = {}  # paragraphs as the story service sent them
        # One call per unit: a paragraph, or the title with the paragraph after it. Each
        # is keyed by its first paragraph's index.
        self._english: dict[int, str] = {}  # what each unit's call was started from
        self._span: dict[int, int] = {}  # paragraphs in each unit
        self._calls: dict[int, asyncio.Task[Translated]] = {}
        self._thai: dict[int, str] = {}
        self._doubts: dict[int, list[str]] = {}  # each kept reply's warnings
        self._shown = 0  # the next unit to hand to on_thai
        # Once the story's final text is in: its units, and whether it opens with a title.
        self._final: list[tuple[int, int]] | None = None
        self._titled = False
        self.usage = Usage()  # every finished call, kept or not
        self.model = ""
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def heard(self, index: int, text: str) -> None:
        """The story service finished paragraph ``index``: translate it now (a title
        waits for the paragraph after it). A request's channel calls it, once registered
        with ``RequestChannel.on_paragraph``."""
        if not self._by_paragraph or self._final is not None or index < 0 or index in self._heard:
            return
        self._heard[index] = text
        for start, span in _units(self._heard, final=False):
            if start not in self._calls:
                self._start(start, span, self._heard)

    async def finish(self, story: str) -> tuple[str, int]:
        """The Thai of ``story`` (the story's final text) and how many paragraphs it has.

        Raises what a translation call raised (rpc.RemoteFailure, rpc.CallError).
        """
        paragraphs = split_paragraphs(story)
        known = dict(enumerate(paragraphs))
        units = _units(known, final=True) if self._by_paragraph else [(0, len(paragraphs))]
        self._final = units
        self._titled = bool(paragraphs) and is_title(paragraphs[0])
        keep = set()
        for start, span in units:
            text = _joined(known, start, span)
            if self._english.get(start) != text or self._span.get(start) != span:
                if start in self._calls:
                    log.info("paragraph %d changed after it was heard: translating it again", start)
                    self._calls.pop(start).cancel()
                self._start(start, span, known)
            keep.add(start)
        for start in [s for s in self._calls if s not in keep]:
            self._calls.pop(start).cancel()
        replies = await asyncio.gather(*(self._calls[start] for start, _ in units))
        return PARAGRAPH_SEPARATOR.join(reply.text.strip() for reply in replies), len(paragraphs)

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

    def _start(self, start: int, span: int, paragraphs: dict[int, str]) -> None:
        if not self._calls and self._on_start is not None:
            self._on_start()
        text = _joined(paragraphs, start, span)
        self._english[start] = text
        self._span[start] = span
        self._thai.pop(start, None)
        self._doubts.pop(start, None)
        request = Translate(
            request_id=self._request_id,
            text=text,
            context=self._context(start, paragraphs),
            names=self._names,
        )
        call = asyncio.create_task(self._translate(request))
        self._calls[start] = call
        call.add_done_callback(lambda done: self._done(start, text, done))

    def _context(self, start: int, paragraphs: dict[int, str]) -> TranslationContext | None:
        if start == 0:
            return None
        first = paragraphs.get(0, "")
        title = first if is_title(first) else None
        before = [paragraphs[i] for i in range(1 if title else 0, start) if i in paragraphs]
        translated = []
        unit = 0
        while unit < start and unit in self._thai:
            translated.append(self._thai[unit])
            unit += self._span[unit]
        return TranslationContext(title=title, before=before, translated=translated)

    def _done(self, start: int, text: str, call: asyncio.Task[Translated]) -> None:
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
        if self._english.get(start) == text and self._calls.get(start) is call:
            self._thai[start] = reply.text.strip()
            self._doubts[start] = list(reply.warnings)
            self._show()

    @property
    def warnings(self) -> list[str]:
        """One plain sentence for each part of the final Thai the translation service
        doubts matches its English (after its own retry), in story order."""
        found = []
        for start, span in self._final or []:
            doubts = self._doubts.get(start)
            if doubts:
                part = _part_name(start, span, self._titled) if self._by_paragraph else "All"
                found.append(f"{part} of the Thai may not match the English: {'; '.join(doubts)}.")
        return found

    def _show(self) -> None:
        while self._shown in self._thai:
            if self._on_thai is not None:
                piece = self._thai[self._shown]
                self._on_thai(piece if self._shown == 0 else PARAGRAPH_SEPARATOR + piece)
            self._shown += self._span[self._shown]


def _units(paragraphs: dict[int, str], *, final: bool) -> list[tuple[int, int]]:
    """(first index, paragraphs) of each call's unit among the paragraphs known so far:
    a title goes with the paragraph after it. Until ``final``, a unit is listed only
    once all its paragraphs are known, and a title only once its partner is."""
    units = []
    index = 0
    while index in paragraphs:
        span = 1
        if index == 0 and is_title(paragraphs[0]):
            if 1 in paragraphs:
                span = 2
            elif not final:
                break  # the title waits for its paragraph
        units.append((index, span))
        index += span
    if not final:
        # Paragraphs heard out of order (a message lost or late) start on their own too;
        # the final text decides in the end.
        listed = {i for start, span in units for i in range(start, start + span)}
        units += [(i, 1) for i in sorted(paragraphs) if i not in listed and i > 1]
    return units


def _joined(paragraphs: dict[int, str], start: int, span: int) -> str:
    return PARAGRAPH_SEPARATOR.join(paragraphs[i] for i in range(start, start + span))


def _part_name(start: int, span: int, titled: bool) -> str:
    """How a reader names a unit: paragraphs are counted after the title, from 1."""
    if titled and start == 0:
        return "The title and first paragraph" if span == 2 else "The title"
    return f"Paragraph {start if titled else start + 1}"


async def translate_lines(
    translate: TranslateCall, request_id: str, lines: Sequence[str]
) -> tuple[list[str | None], Usage]:
    """The Thai of each of ``lines`` (alt texts), in one call, each line a paragraph; a
    line is None when the answer's paragraphs do not line up with them, or the call
    failed (a story is not lost for its alt text)."""
    if not lines:
        return [], Usage()
    request = Translate(request_id=request_id, text=PARAGRAPH_SEPARATOR.join(lines))
    try:
        reply = await translate(request)
    except (RemoteFailure, CallError) as err:
        log.warning("request %s: the alt text was not translated (%s)", request_id, err)
        return [None] * len(lines), Usage()
    thai = split_paragraphs(reply.text)
    if len(thai) != len(lines):
        return [None] * len(lines), reply.usage
    return list(thai), reply.usage
