"""Guards on a written story: find the garbage small models add, and repair what is safe.

A 1.5B model writing from a scene sheet wraps its story in markdown, titles it
"**Title:** …", opens with "Here is a story…" or "[The scene is set in …]", echoes the
sheet ("Photo 1 of 3", "likely (63%)") and signs off with "Note: …" or "(Word count:
180)". ``repair_paragraphs`` removes what can be recognised inside one paragraph, so the
paragraphs streamed while the story is written are already the final ones;
``review`` does that to the whole story, then what needs the prompt or the whole text
(echo of the prompt, a cut-off ending), and says whether the result is still not a
story, so the caller can ask once more.

Every repair fires only on a pattern a clean story does not contain: a clean story
comes back unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from contracts.text import (
    PARAGRAPH_BREAK,
    SENTENCE_ENDINGS,
    SENTENCE_GAP,
    is_title,
    join_paragraphs,
    sentences,
    split_paragraphs,
)


class Problem(StrEnum):
    """A kind of garbage found in a story."""

    EMPTY = "empty"
    TRUNCATED = "cut off"
    ECHO = "prompt echo"
    STAGE_DIRECTION = "stage directions"
    MARKDOWN = "markdown"
    META = "comments about the story"
    PREAMBLE = "preamble"
    NOT_PROSE = "not prose"


# Less than this share of the words left after repair: most of it was garbage.
MIN_KEPT_SHARE = 0.6
# A line is an echo when at least this share of its word 6-grams is in the prompt.
ECHO_SHARE = 0.5
_NGRAM = 6

_TAG = re.compile(r"</?(story|transcript|style_guidance|title)>", re.IGNORECASE)
_STORY_BLOCK = re.compile(r"<story>(.*?)(?:</story>|$)", re.IGNORECASE | re.DOTALL)

# Markdown, line by line.
_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*([-*_=])(\s*\1){2,}\s*$")
_HEADING = re.compile(r"^\s*#{1,6}\s*")
_QUOTE_MARK = re.compile(r"^\s*>\s?")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")
_WHOLE_BOLD = re.compile(r"^\s*(\*\*|__)(?=\S)(.+?)(?<=\S)\1\s*:?\s*$")
_EMPHASIS = (
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"),
    re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"),
    re.compile(r"(?<!\w)_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)"),
)
_STRAY_EMPHASIS = re.compile(r"\*\*|(?<!\w)__|__(?!\w)")

# Titles and labels.
_TITLE_PREFIX = re.compile(r"^\s*(?:story\s+)?title\s*[:\-–—]\s*(.*?)\s*$", re.IGNORECASE)
_STORY_LABEL = re.compile(r"^\s*(?:the\s+)?story\s*:\s*", re.IGNORECASE)
_TITLE_QUOTES = "\"'“”‘’*_ "

# The scene sheet and the prompt's picture labels.
_PICTURE_LABEL = re.compile(
    r"^\s*(?:photo|frame|picture|image)\s+\d+(?:\s+of\s+\d+|\s+at\s+[\d:.]+)?\s*(?:[:.\-–—]\s*|$)",
    re.IGNORECASE,
)
_SHEET_LINE = re.compile(
    r"^\s*(?:the\s+)?(?:scene\s+sheet\b|may\s+show\s*:|people\s*:.*\bdetected\b|look\s*:.*\blight\s*:"
    r"|capture\s*:|text\s+visible\s+in\s+the\s+picture|spoken\s+in\s+the\s+video"
    r"|the\s+frames\s+come\s+in\s+order\s+from\s+one\s+video)",
    re.IGNORECASE,
)
_CERTAIN = r"(?:likely|possibly|an?\s+uncertain\s+guess|uncertain\s+guess)"
_CERTAINTY = re.compile(
    rf"(?:\s*\b{_CERTAIN})?\s*\((?:{_CERTAIN},?\s*)?\d{{1,3}}(?:\.\d+)?\s?%\)", re.IGNORECASE
)

# A sentence that speaks of the sheet itself ("the details on the scene sheet").
_SHEET_TALK = re.compile(r"\bscene\s+sheet\b|\buncertain\s+guess\b", re.IGNORECASE)

# Stage directions: a bracketed line, or a bracket between sentences.
_BRACKETS = re.compile(r"\[[^\[\]\n]*\]")
_PAREN_DIRECTION = re.compile(
    r"^\s*\(\s*(?:the\s+)?(?:scene|setting|fade|cut\s+to|narrator|camera|pause|music|sound"
    r"|silence|end\s+scene)\b[^()]*\)\s*$",
    re.IGNORECASE,
)

# What the model says about the story instead of telling it. Anchored at the start of
# a line or sentence, after markup only: a quotation mark means a character speaks.
_LEAD = r"^[\s(\[*_#>-]*"
_META = re.compile(
    _LEAD
    + r"""(?:
        (?:author'?s\s+)?notes?\s*[:\-–—]
      | word\s*count\b
      | \d+\s+words\W*$
      | (?:the|this)\s+(?:short\s+)?story\s+(?:should|could|would|will|can|might|must|needs?\s+to)
        \s+(?:continue|go\s+on|be\s+(?:expanded|continued|longer|extended)|include|end)
      | (?:this|the\s+above|the)\s+(?:short\s+)?(?:story|tale)\s+(?:captures|is\s+inspired
        |was\s+inspired|explores|reflects|uses|is\s+based|was\s+based|highlights|blends|aims
        |combines|incorporates|is\s+written|was\s+written)
      | in\s+this\s+(?:short\s+)?story\b
      | i\s+hope\s+(?:you\s+(?:enjoy|enjoyed|like|liked|found)\b.*\b(?:story|tale)|this\s+(?:story|tale))
      | hope\s+you\s+enjoy
      | let\s+me\s+know\s+if\b
      | feel\s+free\s+to\s+(?:ask|let|request|adjust|modify|change)
      | (?:if\s+you(?:'d|\s+would)|would\s+you)\s+like\s+(?:me\s+to|a\s+different|another|any|more)
      | end\s+of\s+(?:the\s+)?story\W*$
      | (?:i'?m|i\s+am)\s+sorry,?\s+but\b
      | i\s+(?:cannot|can't|am\s+unable\s+to)\s+(?:write|create|generate|see|view)\b
      | i\s+don't\s+have\s+enough\s+information
      | as\s+an\s+ai\b
      | (?:if|should)\s+you\s+(?:have|can\s+provide|could\s+provide|provide)\s+(?:me\s+with\s+)?
        (?:more|some|additional)\s+(?:information|details|context|clues)
      | (?:in\s+)?the\s+(?:first|second|third|fourth|fifth|next|final|last)\s+
        (?:photo|photograph|picture|image|frame)\s+(?:shows|depicts|features|captures)\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_PREAMBLE = re.compile(
    _LEAD
    + r"""(?:(?:sure|certainly|of\s+course|okay|absolutely|alright)\b[!,.]*\s*)?
    (?:
        (?:here(?:'s|’s|\s+is)|below\s+is)\s+(?:a|an|the|your|my)\s+(?:[\w-]+\s+){0,4}?(?:story|tale)\b
        (?:[^:\n]{0,80}:(?=\s|$)
          |[^.!?\n]*\b(?:inspired\s+by|based\s+on|about|from|using|for)\s+(?:the|these|this|your)
           \s+(?:[\w-]+\s+){0,2}?(?:photos?|pictures?|images?|frames?|scene|sheet|video|facts
           |prompt|guidance)\b[^.!?\n:]*[.!?:]?)
      | here\s+(?:you\s+go|it\s+is)\b[!.:]?
      | $
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
# Bare "Sure!" needs the optional greeting above to have matched something.
_BARE_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of\s+course|absolutely)[!,.]?\s*$", re.IGNORECASE
)

_WORD = re.compile(r"\w+")


@dataclass
class _Findings:
    problems: set[Problem] = field(default_factory=set)
    lines: int = 0
    bullets: int = 0


@dataclass(frozen=True)
class Review:
    """A story after repair: its text, what was wrong, and what repair could not fix."""

    text: str
    found: frozenset[Problem]
    unresolved: frozenset[Problem]

    @property
    def usable(self) -> bool:
        return not self.unresolved

    @property
    def words(self) -> int:
        return count_words(self.text)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def story_block(text: str, found: set[Problem] | None = None) -> str:
    """If the model wrapped its story in <story> tags, only that block (what stands
    around it is usually an echo of the prompt); else ``text``."""
    block = _STORY_BLOCK.search(text)
    if not block or not block.group(1).strip():
        return text
    if found is not None and (text[: block.start()] + text[block.end() :]).strip():
        found.add(Problem.ECHO)
    return block.group(1)


def strip_tags(text: str, found: set[Problem] | None = None) -> str:
    """``text`` without our prompt's tags, which small models like to echo."""
    stripped = _TAG.sub("", text)
    if found is not None and stripped != text:
        found.add(Problem.ECHO)
    return stripped


def repair_paragraphs(text: str, found: set[Problem] | None = None) -> str:
    """Some paragraphs of a story with the garbage that one paragraph can show removed:
    markdown marks (their words kept), a "Title:" prefix, bracketed stage directions,
    a preamble, comments about the story and lines of the scene sheet. Paragraphs
    come back separated by one blank line, empty ones dropped; ``found`` collects the
    kinds of problem seen."""
    findings = _Findings()
    out = _repair(text, findings)
    if found is not None:
        found |= findings.problems
    return out


def _repair(text: str, findings: _Findings) -> str:
    paragraphs: list[str] = []
    # Raw blocks: a paragraph's lines are repaired before they are stripped.
    for block in PARAGRAPH_BREAK.split(text):
        paragraphs.extend(_repair_paragraph(block, findings))
    return join_paragraphs(paragraphs)


def _repair_paragraph(block: str, findings: _Findings) -> list[str]:
    """One paragraph's lines repaired; a title line found inside it stands on its own."""
    out: list[str] = []
    lines: list[str] = []
    for raw in block.split("\n"):
        if not raw.strip():
            continue
        findings.lines += 1
        line, title = _repair_line(raw, findings)
        if not line:
            continue
        if title:
            if lines:
                out.append("\n".join(lines).strip())
                lines = []
            out.append(line.strip())
        else:
            lines.append(line)
    if lines:
        out.append("\n".join(lines).strip())
    return out


def _repair_line(raw: str, findings: _Findings) -> tuple[str, bool]:
    """The line repaired, and whether it is a title standing alone."""
    problems = findings.problems
    line = raw
    if _FENCE.match(line) or _RULE.match(line):
        problems.add(Problem.MARKDOWN)
        return "", False
    title = False
    if _HEADING.match(line):
        line = _HEADING.sub("", line, count=1)
        problems.add(Problem.MARKDOWN)
        title = True
    if _QUOTE_MARK.match(line):
        line = _QUOTE_MARK.sub("", line, count=1)
        problems.add(Problem.MARKDOWN)
    if _BULLET.match(line):
        line = _BULLET.sub("", line, count=1)
        problems.add(Problem.MARKDOWN)
        findings.bullets += 1
    if _WHOLE_BOLD.match(line):
        title = True
    for pattern in _EMPHASIS:
        line, count = pattern.subn(r"\1", line)
        if count:
            problems.add(Problem.MARKDOWN)
    line, count = _STRAY_EMPHASIS.subn("", line)
    if count:
        problems.add(Problem.MARKDOWN)
        # An unclosed '**"Title"' line: a title when it is short and not a sentence.
        title = title or is_title(line.strip().strip('"“”'))

    if _SHEET_LINE.match(line):
        problems.add(Problem.ECHO)
        return "", False
    label = _PICTURE_LABEL.match(line)
    if label:
        problems.add(Problem.ECHO)
        line = line[label.end() :]
    line, count = _CERTAINTY.subn("", line)
    if count:
        problems.add(Problem.ECHO)
        line = re.sub(r",\s*(?=[,.;:!?])", "", line)  # "a seashore, likely (63%), and"

    line = _drop_stage_directions(line, problems)
    if _BARE_PREAMBLE.match(line):
        problems.add(Problem.PREAMBLE)
        return "", False
    preamble = _PREAMBLE.match(line)
    if preamble and preamble.end() > 0 and line[: preamble.end()].strip():
        problems.add(Problem.PREAMBLE)
        line = line[preamble.end() :]
    titled = _TITLE_PREFIX.match(line)
    if titled:
        problems.add(Problem.MARKDOWN)
        line = titled.group(1).strip(_TITLE_QUOTES)
        title = True
    else:
        label = _STORY_LABEL.match(line)
        if label:
            problems.add(Problem.PREAMBLE)
            line = line[label.end() :]
    if title and len(line) > 1 and line[0] in '"“' and line[-1] in '"”':
        line = line[1:-1]  # a title in quotes
    line = _drop_meta(line, problems)
    if _SHEET_TALK.search(line):
        problems.add(Problem.ECHO)
        line = " ".join(s for s in sentences(line) if not _SHEET_TALK.search(s))
    if line != raw:
        line = re.sub(r"[ \t]{2,}", " ", line).strip()
    return (line, title and bool(line)) if line.strip() else ("", False)


def _drop_stage_directions(line: str, problems: set[Problem]) -> str:
    if _PAREN_DIRECTION.match(line):
        problems.add(Problem.STAGE_DIRECTION)
        return ""
    while True:
        for match in _BRACKETS.finditer(line):
            before, after = line[: match.start()].rstrip(), line[match.end() :].lstrip()
            # Only whole directions: between sentences, never inside one ("Hi, [Name]!").
            if (not before or before.endswith(SENTENCE_ENDINGS)) and (
                not after or after[0].isupper() or after[0] in "\"“'‘("
            ):
                problems.add(Problem.STAGE_DIRECTION)
                line = (before + " " + after).strip()
                break
        else:
            return line


def _drop_meta(line: str, problems: set[Problem]) -> str:
    """The line without comments about the story: the whole line, or its last sentences."""
    while line:
        if _META.match(line):
            problems.add(Problem.META)
            return ""
        gaps = list(SENTENCE_GAP.finditer(line))
        if not gaps or not _META.match(line[gaps[-1].end() :]):
            return line
        problems.add(Problem.META)
        line = line[: gaps[-1].end()].rstrip()
    return line


def _ngrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)}


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def _drop_echo(text: str, source: str, problems: set[Problem]) -> str:
    """``text`` without the lines that mostly repeat ``source`` (the prompt)."""
    known = _ngrams(_words(source))
    if not known:
        return text
    paragraphs = []
    for paragraph in split_paragraphs(text):
        kept = []
        for line in paragraph.split("\n"):
            words = _words(line)
            grams = [tuple(words[i : i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)]
            if grams and sum(g in known for g in grams) >= ECHO_SHARE * len(grams):
                problems.add(Problem.ECHO)
            else:
                kept.append(line)
        paragraphs.append("\n".join(kept))
    return join_paragraphs(paragraphs)


def _trim_cut_off_end(text: str, problems: set[Problem]) -> str:
    """Without a last sentence the model did not finish (it ran out of tokens)."""
    paragraphs = split_paragraphs(text)
    last = paragraphs[-1].rstrip()
    if (
        last.endswith(SENTENCE_ENDINGS)
        or last.lower().strip(" .!") == "the end"
        or (len(paragraphs) == 1 and not SENTENCE_GAP.search(last))  # judged as not prose
    ):
        return text
    problems.add(Problem.TRUNCATED)
    gaps = list(SENTENCE_GAP.finditer(last))
    if gaps:
        paragraphs[-1] = last[: gaps[-1].end()].rstrip()
    else:
        paragraphs.pop()
    return join_paragraphs(paragraphs)


def review(text: str, source: str = "") -> Review:
    """Repair ``text`` (a model's whole answer) and judge what is left.

    ``source`` is the prompt the model saw (without material it may quote, such as a
    transcript): lines of the story that mostly repeat it are echo and dropped. The
    review is unusable when nothing is left, when most of the answer was garbage,
    when what is left has no sentence or is a list, or when a bracket remains inside
    a sentence.
    """
    found: set[Problem] = set()
    text = strip_tags(story_block(text, found), found)
    before = count_words(text)
    findings = _Findings()
    text = _repair(text, findings)
    found |= findings.problems
    text = _drop_echo(text, source, found)
    if text:
        text = _trim_cut_off_end(text, found)
    unresolved: set[Problem] = set()
    kept = count_words(text)
    if not kept:
        unresolved.add(Problem.EMPTY)
    elif kept < MIN_KEPT_SHARE * before:
        unresolved |= found - {Problem.MARKDOWN}
    if kept:
        paragraphs = split_paragraphs(text)
        body = paragraphs[1:] if len(paragraphs) > 1 and is_title(paragraphs[0]) else paragraphs
        if not any(SENTENCE_GAP.search(p + " ") for p in body):
            unresolved.add(Problem.NOT_PROSE)
        if findings.bullets * 2 > findings.lines:
            unresolved.add(Problem.NOT_PROSE)
        if "[" in text or "]" in text:
            unresolved.add(Problem.STAGE_DIRECTION)
    if not unresolved and kept < MIN_KEPT_SHARE * before:
        unresolved.add(Problem.NOT_PROSE)
    return Review(text=text, found=frozenset(found), unresolved=frozenset(unresolved))
