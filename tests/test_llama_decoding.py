"""The rules llama.cpp's decoding runs under: loop detection, the Thai mask, the Thai layout."""

from __future__ import annotations

import numpy as np
import pytest

from llm.script_mask import ThaiMask, thai_text_layout
from llm.token_watch import loop_start


@pytest.mark.parametrize(
    ("tokens", "cut"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 8] * 3, 8),  # one run of 8 tokens three times: keep the first
        (list(range(30)) + [7] * 24, 31),  # the same token 24 times
        (list(range(100)), None),
        (list(range(20)) + [1, 2] * 5, None),  # a short repetition is not a loop
    ],
)
def test_loop_detection(tokens: list[int], cut: int | None) -> None:
    assert loop_start(tokens) == cut


def test_thai_mask_allows_only_thai_continuations() -> None:
    vocabulary = [
        b"",  # 0: a control token, here also end-of-text
        "ก".encode(),  # 1: a whole Thai letter (E0 B8 81)
        b"\xe0\xb8",  # 2: the first two bytes of a Thai character
        b"\x81",  # 3: a last byte
        b"\xe0",  # 4: a first byte
        b"\xb8\x81",  # 5: the last two bytes of ก
        b"cat",  # 6
        b" ",  # 7
        b"\xe0\xa4",  # 8: the start of a Devanagari character
        b"\xa4\x95",  # 9: the end of the Devanagari क
        b"12",  # 10
        b"(",  # 11
        b"\n",  # 12
        "ขา ".encode(),  # 13
        b'"',  # 14
    ]
    mask = ThaiMask(vocabulary, end_tokens=[0])

    def allowed(pending: bytes, *, first: bool = False) -> set[int]:
        scores = mask.apply(np.zeros(len(vocabulary), dtype=np.float32), pending, first=first)
        return {token for token, score in enumerate(scores) if score == 0}

    assert allowed(b"", first=True) == {1, 2, 4, 10, 13, 14}  # no blank start, no empty answer
    assert allowed(b"") == {0, 1, 2, 4, 7, 10, 12, 13, 14}
    assert allowed(b"\xe0") == {5}  # \xa4\x95 would finish a Devanagari letter
    assert allowed(b"\xe0\xb8") == {3}
    assert allowed(b"\xe0\xb9") == {3}  # E0 B9 81 is แ


def test_thai_layout_tidies_blank_space() -> None:
    assert thai_text_layout("ทะเล  \n\n\n\nมาร่า \n") == "ทะเล\n\nมาร่า"
