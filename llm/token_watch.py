"""Watching a llama.cpp generation token by token: stream the new text, keep the script,
stop on cancel, when the model falls into a loop or begins a paragraph nobody asked for."""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from contracts.text import paragraph_cut
from llm.script_mask import ThaiMask

# A generation that repeats the same run of tokens this many times in a row, over at
# least this many tokens, is a loop: small models fall into them, especially when their
# script is constrained.
_LOOP_REPEATS = 3
_LOOP_MIN_SPAN = 24
_LOOP_MAX_PERIOD = 64


class TokenWatcher:
    """Runs before each sampled token: keeps the script, streams new text, stops on cancel or a loop.

    llama-cpp-python calls logits processors with the tokens so far (prompt and
    answer) and the next token's logits; leaving only end-of-text makes it stop.
    """

    def __init__(
        self,
        llama: Any,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event,
        mask: ThaiMask | None,
        *,
        max_paragraphs: int | None = None,
    ) -> None:
        self._llama = llama
        self._on_text = on_text
        self._cancelled = cancelled
        self._mask = mask
        self.masked = mask is not None
        self._prompt_length: int | None = None
        self._answer: list[int] = []
        self._decoded = 0
        # Tracks the answer's bytes; its buffered bytes are an unfinished character.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._sent = ""
        self.loop_at: int | None = None
        self._max_paragraphs = max_paragraphs
        # Set once the answer began a paragraph past `max_paragraphs`.
        self.past_paragraphs = False

    def __call__(
        self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        if self._prompt_length is None:
            self._prompt_length = len(input_ids)
        self._answer = input_ids[self._prompt_length :].tolist()
        self._decode()
        if self._max_paragraphs is not None and not self.past_paragraphs:
            self.past_paragraphs = paragraph_cut(self._sent, self._max_paragraphs) is not None
        if self._cancelled.is_set() or self.loop_at is not None or self.past_paragraphs:
            return self._only_end(scores)
        loop_at = loop_start(self._answer)
        if loop_at is not None:
            self.loop_at = loop_at
            return self._only_end(scores)
        if self._mask is not None:
            return self._mask.apply(scores, self._decoder.getstate()[0], first=not self._answer)
        return scores

    def text_before_loop(self) -> str:
        """The answer up to the end of the first pass through the loop."""
        kept = self._answer[: self.loop_at]
        text: str = self._llama.detokenize(kept).decode("utf-8", errors="ignore")
        return text

    def finish(self, text: str) -> None:
        """Send whatever the last callbacks did not (the final token is never seen before sampling)."""
        if text.startswith(self._sent) and len(text) > len(self._sent):
            self._emit(text[len(self._sent) :])

    def _decode(self) -> None:
        new = self._answer[self._decoded :]
        if not new:
            return
        piece = self._llama.detokenize(new, prev_tokens=self._answer[: self._decoded])
        self._decoded = len(self._answer)
        text = self._decoder.decode(piece)
        if text:
            self._emit(text)

    def _emit(self, text: str) -> None:
        self._sent += text
        if self._on_text is not None:
            self._on_text(text)

    def _only_end(self, scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        stopped = np.full_like(scores, -np.inf)
        stopped[self._llama.token_eos()] = 0.0
        return stopped


def loop_start(tokens: list[int]) -> int | None:
    """Where to cut `tokens` if they end in a loop (one run repeated _LOOP_REPEATS times), else None.

    The cut keeps the text up to the end of the run's first occurrence.
    """
    count = len(tokens)
    if count < _LOOP_MIN_SPAN:
        return None
    tail = np.asarray(tokens[-_LOOP_MAX_PERIOD * _LOOP_REPEATS :])
    for period in range(1, _LOOP_MAX_PERIOD + 1):
        span = max(period * _LOOP_REPEATS, _LOOP_MIN_SPAN)
        if span > len(tail):
            break
        window = tail[-span:]
        if np.array_equal(window[period:], window[:-period]):
            return count - span + period
    return None
