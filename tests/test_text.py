"""The text model: what a paragraph, a title, a sentence and a name are, one definition
that the streaming cut, the backends' paragraph limit, the guards and the names agree on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.text import (
    SENTENCE_GAP,
    cut_paragraphs,
    ends_sentence,
    join_paragraphs,
    names_in,
    paragraph_cut,
    sentences,
    split_paragraphs,
)
from story_service.paragraphs import ParagraphCutter

# Letters, and every kind of white space a blank line may or may not be made of.
TEXT = st.text(alphabet="ab. \t\r\n", max_size=60)
PIECES = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8)


def streamed(text: str, sizes: list[int]) -> list[tuple[int, str]]:
    """What the story service publishes while ``text`` arrives in pieces of ``sizes``
    characters (taken in turn), tidied by nothing."""
    heard: list[tuple[int, str]] = []
    cutter = ParagraphCutter(lambda index, text: heard.append((index, text)), lambda t: t)
    start = 0
    turn = 0
    while start < len(text):
        size = sizes[turn % len(sizes)]
        cutter.feed(text[start : start + size])
        start += size
        turn += 1
    cutter.close()
    return heard


@settings(max_examples=400, deadline=None)
@given(TEXT, PIECES)
def test_the_streaming_cut_hands_on_the_paragraphs_the_final_split_counts(
    text: str, sizes: list[int]
) -> None:
    assert streamed(text, sizes) == list(enumerate(split_paragraphs(text)))


@settings(max_examples=400, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=4))
def test_an_answer_cut_after_n_paragraphs_keeps_the_first_n_of_the_split(
    text: str, limit: int
) -> None:
    assert split_paragraphs(cut_paragraphs(text, limit)) == split_paragraphs(text)[:limit]


@settings(max_examples=200, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=4))
def test_a_growing_answer_is_stopped_as_soon_as_the_split_counts_a_paragraph_too_many(
    text: str, limit: int
) -> None:
    # What a backend watching its output token by token decides (llm.token_watch).
    for end in range(len(text) + 1):
        prefix = text[:end]
        past = paragraph_cut(prefix, limit) is not None
        assert past == (len(split_paragraphs(prefix)) > limit)


@given(TEXT)
def test_joined_paragraphs_split_back_into_themselves(text: str) -> None:
    paragraphs = split_paragraphs(text)
    assert split_paragraphs(join_paragraphs(paragraphs)) == paragraphs
    assert join_paragraphs(["  One.\n", "", " \n", "Two."]) == "One.\n\nTwo."


@given(st.text(alphabet="ab.!?…\"”’')]“‘( \n", max_size=30))
def test_a_word_after_a_gap_between_sentences_opens_a_sentence(line: str) -> None:
    # The guards cut sentences at SENTENCE_GAP; the names skip a word opening one.
    for gap in SENTENCE_GAP.finditer(line):
        assert ends_sentence(line[: gap.end()])


def test_a_stage_directions_bracket_ends_its_sentence_for_guards_and_names_alike() -> None:
    line = "[She waits.] Mara smiles at Tom."
    assert sentences(line) == ["[She waits.]", "Mara smiles at Tom."]
    assert names_in([line]) == ["Tom"]  # Mara opens a sentence, as after "waits."
    assert names_in(["She waits. Mara smiles at Tom."]) == ["Tom"]


def test_a_sentence_ends_with_its_mark_then_closing_quotes() -> None:
    assert ends_sentence('"Hello." "')
    assert ends_sentence("It rained.) ")
    assert not ends_sentence("Mr")
    assert sentences('"Hi." She left! Then') == ['"Hi."', "She left!", "Then"]
