"""Cut a story into paragraphs while it is being written, so each can be translated at once."""

from __future__ import annotations

from collections.abc import Callable

from contracts.text import PARAGRAPH_BREAK, split_paragraphs


class ParagraphCutter:
    """Hears the story a piece at a time and hands on each paragraph once it is finished.

    A paragraph is finished when a blank line follows it; ``close`` hands on the last
    one. Numbering and splitting follow ``contracts.text.split_paragraphs``, so
    the caller can check what it heard against the final text. ``tidy`` cleans each
    paragraph as the final story is cleaned (a paragraph it empties is skipped).
    """

    def __init__(self, emit: Callable[[int, str], None], tidy: Callable[[str], str]) -> None:
        self._emit = emit
        self._tidy = tidy
        self._buffer = ""
        self._count = 0

    def feed(self, piece: str) -> None:
        self._buffer += piece
        breaks = list(PARAGRAPH_BREAK.finditer(self._buffer))
        if breaks:
            last = breaks[-1]
            finished, self._buffer = self._buffer[: last.start()], self._buffer[last.end() :]
            self._hand_on(finished)

    def discard(self) -> None:
        """Forget the unfinished paragraph: the answer it belongs to is being replaced."""
        self._buffer = ""

    def close(self) -> None:
        self._hand_on(self._buffer)
        self._buffer = ""

    def _hand_on(self, text: str) -> None:
        for paragraph in split_paragraphs(self._tidy(text)):
            self._emit(self._count, paragraph)
            self._count += 1
