"""What a story's text is made of: paragraphs, a title, sentences and names.

One definition for everything that reads a story: the story service's guards and its
streaming cut, the backends that stop an answer after some paragraphs, the translation
service, and the gateway, which counts ``Paragraph`` messages by ``split_paragraphs``.
Pure text: no NATS, no model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# --- paragraphs ----------------------------------------------------------------------

PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")  # a blank line
PARAGRAPH_SEPARATOR = "\n\n"  # how paragraphs are written back together


def split_paragraphs(text: str) -> list[str]:
    """The paragraphs of a story as ``Paragraph`` counts them: blocks between blank
    lines, stripped, empty ones dropped (a title line on its own is a paragraph)."""
    return [block.strip() for block in PARAGRAPH_BREAK.split(text) if block.strip()]


def join_paragraphs(paragraphs: Iterable[str]) -> str:
    """``paragraphs`` as one text, one blank line between them, each stripped and empty
    ones dropped: ``split_paragraphs`` of the result gives them back."""
    return PARAGRAPH_SEPARATOR.join(p.strip() for p in paragraphs if p.strip())


def paragraph_cut(text: str, max_paragraphs: int) -> int | None:
    """Where ``text`` must end to keep only its first ``max_paragraphs`` paragraphs (as
    ``split_paragraphs`` counts them), or None when it has no more. A paragraph counts
    once it holds a visible character, so a text that grows a piece at a time is cut
    as soon as a paragraph too many begins."""
    seen = 0
    start = 0
    for gap in [*PARAGRAPH_BREAK.finditer(text), None]:
        end = len(text) if gap is None else gap.start()
        if text[start:end].strip():
            seen += 1
            if seen > max_paragraphs:
                return start
        if gap is not None:
            start = gap.end()
    return None


def cut_paragraphs(text: str, max_paragraphs: int | None) -> str:
    """``text`` with no more than ``max_paragraphs`` paragraphs (all of it when None)."""
    if max_paragraphs is None:
        return text
    cut = paragraph_cut(text, max_paragraphs)
    return text if cut is None else text[:cut].rstrip()


# --- sentences -----------------------------------------------------------------------

SENTENCE_MARKS = ".!?…"  # what ends a sentence
CLOSING_MARKS = "\"”’')"  # a closing quote or parenthesis that may follow it
OPENING_MARKS = '"“‘('  # an opening one that may begin the next
# The last character of a finished sentence: its mark, a closing quote or parenthesis
# (a line of speech), or a dash (speech broken off). A title ends otherwise.
SENTENCE_ENDINGS = (*SENTENCE_MARKS, *CLOSING_MARKS, "—")
# After the mark, a stage direction's closing bracket counts as a closing mark too:
# "[She waits.] Mara smiles." holds two sentences.
_AFTER_MARK = rf"[{SENTENCE_MARKS}][{CLOSING_MARKS}\]]*"
# Between two sentences of a line: the mark, its closing marks, white space.
SENTENCE_GAP = re.compile(rf"{_AFTER_MARK}\s+")
# The end of a text after which a word opens a sentence ('"Hello." "It is late."').
_SENTENCE_END = re.compile(rf"{_AFTER_MARK}\s*[{OPENING_MARKS}]*$")


def sentences(line: str) -> list[str]:
    """The sentences of one line, cut at each ``SENTENCE_GAP``, stripped."""
    starts = [0, *(gap.end() for gap in SENTENCE_GAP.finditer(line))]
    ends = [*starts[1:], len(line)]
    return [line[start:end].strip() for start, end in zip(starts, ends, strict=True)]


def ends_sentence(text: str) -> bool:
    """Whether a word after ``text`` (the start of its line up to the word) opens a
    sentence: ``text`` ends with a sentence's mark, then maybe white space and opening
    marks."""
    return bool(_SENTENCE_END.search(text))


# --- titles --------------------------------------------------------------------------

TITLE_WORDS = 12


def is_title(paragraph: str) -> bool:
    """A story's first paragraph is its title when it is one short line, not a sentence;
    the story service repairs titles and the gateway translates them by this rule."""
    return (
        "\n" not in paragraph
        and len(paragraph.split()) <= TITLE_WORDS
        and not paragraph.endswith(SENTENCE_ENDINGS)
    )


# --- names ---------------------------------------------------------------------------

# A longer run of capitalised words is a title or a phrase ("The Old Harbour Coffee Shop
# Company"), not a name: asked to spell one, the local model wrote a Thai sentence.
MAX_NAME_WORDS = 3
_NAME_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_POSSESSIVE = re.compile(r"['’]s$")
_FIRST_PERSON = re.compile(r"I(?:['’](?:m|ll|ve|d))?$")  # I, I'm, I'll, I've, I'd


def names_in(texts: Iterable[str]) -> list[str]:
    """Capitalised words that do not start a sentence (names, mostly), first seen first.

    A run of them ("Old Tom") is one name, ended by a possessive ("Tom's Boat" holds
    Tom); "I" (and "I'm"...) and words that open a sentence or a line are not counted,
    since any word is capitalised there.
    """
    found: dict[str, None] = {}
    for text in texts:
        for line in text.splitlines():
            run: list[str] = []
            previous_end = 0
            for match in _NAME_WORD.finditer(line):
                word = match.group(0)
                between = line[previous_end : match.start()]
                opens_sentence = previous_end == 0 or ends_sentence(line[:previous_end] + between)
                previous_end = match.end()
                # "AM", "TV": letters, not a name to spell.
                capitalised = (
                    word[0].isupper() and not word.isupper() and not _FIRST_PERSON.match(word)
                )
                if capitalised and not opens_sentence and (not run or between == " "):
                    owner = _POSSESSIVE.sub("", word)
                    run.append(owner)
                    if owner != word:  # "Bourdain's Coffee Shop": the name ends at the 's
                        found.setdefault(" ".join(run), None)
                        run = []
                    continue
                if run:
                    found.setdefault(" ".join(run), None)
                run = []
            if run:
                found.setdefault(" ".join(run), None)
    return list(found)


def story_names(english: str) -> list[str]:
    """The names in the paragraphs of ``english`` that are not a title (every word of a
    title is capitalised, names or not), of at most MAX_NAME_WORDS words."""
    found = names_in(p for p in split_paragraphs(english) if not is_title(p))
    return [name for name in found if len(name.split()) <= MAX_NAME_WORDS]


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` holds ``name`` as a whole word or words (a name the person gave
    need not be capitalised or stand mid-sentence, as ``names_in`` wants)."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None
