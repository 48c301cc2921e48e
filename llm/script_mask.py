"""Token masks that keep a local model's answer in Thai script.

The mask plays the part of a GBNF grammar over the same characters: Thai letters,
vowel and tone marks, Thai and ASCII digits, spaces, line breaks and the punctuation
Thai prose uses. It is exact about UTF-8 (a Thai character split over two tokens must
be completed as a Thai character) and much cheaper: llama.cpp's grammar sampler tests
every one of Qwen's 151,000 tokens against the grammar at every step, which cost
40% of the generation speed here, while adding a precomputed mask costs nothing.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

# The characters of Thai prose on a line, written for a character class that both Python's
# re and llama.cpp's GBNF read alike (llm.llama_server builds its grammar from them).
# Parentheses are left out on purpose: the 1.5B model puts translator's notes in them.
THAI_LINE_CHARACTERS = r"\u0E01-\u0E3A\u0E3F-\u0E5B0-9 \"“”‘’.,!?:;…–—/%'\-"
# An answer starts with a Thai letter, a digit or an opening quote, never blank space.
THAI_OPENING_CHARACTERS = r'\u0E01-\u0E3A\u0E3F-\u0E5B0-9"“‘'
THAI_TEXT = re.compile(rf"[{THAI_LINE_CHARACTERS}\n]*")
_OPENING = re.compile(rf"[{THAI_OPENING_CHARACTERS}]")
# Every Thai character is three UTF-8 bytes: E0 B8 xx or E0 B9 xx. These are the
# unfinished characters a token may leave for the next one to complete.
THAI_PREFIXES = (b"", b"\xe0", b"\xe0\xb8", b"\xe0\xb9")


def _thai_piece(data: bytes) -> tuple[str, bytes] | None:
    """Decode `data` as Thai-script text that may end inside a Thai character, else None."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        text = decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return None
    pending = decoder.getstate()[0]
    if pending not in THAI_PREFIXES or not THAI_TEXT.fullmatch(text):
        return None
    return text, pending


class ThaiMask:
    """Additive logit masks (0 or -inf per token) that allow only Thai-script continuations."""

    def __init__(self, token_bytes: Sequence[bytes], end_tokens: Iterable[int]) -> None:
        """Build the masks from each token's bytes (index = token id) and the end-of-text tokens."""
        count = len(token_bytes)
        allowed = {prefix: np.zeros(count, dtype=bool) for prefix in THAI_PREFIXES}
        opening = np.zeros(count, dtype=bool)
        for token, raw in enumerate(token_bytes):
            if not raw:
                continue  # control tokens
            continues_a_character = raw[0] & 0xC0 == 0x80
            for prefix in THAI_PREFIXES[1:] if continues_a_character else THAI_PREFIXES[:1]:
                piece = _thai_piece(prefix + raw)
                if piece is None:
                    continue
                allowed[prefix][token] = True
                text, pending = piece
                if not prefix and (_OPENING.match(text) or (not text and pending)):
                    opening[token] = True
        ends = list(end_tokens)
        allowed[b""][ends] = True  # the answer may end between characters, but not inside one
        self._masks = {
            prefix: np.where(ok, 0.0, -np.inf).astype(np.float32) for prefix, ok in allowed.items()
        }
        self._opening = np.where(opening, 0.0, -np.inf).astype(np.float32)
        self.allowed_tokens = int(allowed[b""].sum())

    def apply(
        self, scores: npt.NDArray[np.single], pending: bytes, *, first: bool
    ) -> npt.NDArray[np.single]:
        """Return `scores` with every token that would leave Thai script made impossible.

        `pending` holds the bytes of an unfinished character at the end of the answer so
        far; `first` is True before the first token of the answer.
        """
        if first:
            return scores + self._opening
        # The masks only let the answer reach the pending states they have masks for.
        return scores + self._masks.get(pending, self._masks[b""])


def thai_text_layout(text: str) -> str:
    """Tidy a masked answer: no trailing spaces on lines, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.strip().split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
