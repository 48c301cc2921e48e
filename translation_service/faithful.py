"""Cheap checks that a Thai translation still says what its English said.

No second model is at hand to judge meaning, so these catch what can be counted: a
translation with fewer paragraphs than its English, one far shorter or longer than a
translation should be, a number or a colour that went missing, a translator's note
about the translation in it, and, given the Thai
spelling of each name (translation_service.names), a name not written that way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from contracts.text import split_paragraphs
from translation_service.names import misspelt_names

# Thai characters per English character, both counted without white space and Thai
# combining marks (vowel signs above and below, tone marks: they sit on a letter and
# take no room of their own). Measured on 14 good hand-made pairs of story paragraphs
# (tests/test_faithful.py GOOD_PAIRS, 66 to 163 English characters each, with names,
# numbers and colours, and test_translate.py's three-paragraph pair): 0.63 to 0.91.
# The band is about that range widened by a factor of two each way (0.3 and 1.8), so
# only gross failures trip it (half a paragraph dropped, translator's notes or a loop
# added), not a translator's wordier or terser turn of phrase.
MIN_LENGTH_RATIO = 0.3
MAX_LENGTH_RATIO = 1.8
# Under this many English characters (about eight words: a title, "The end.") a ratio
# says nothing: a single word more or less moves it past any band.
MIN_CHARS_FOR_RATIO = 40

# Thai digits ๐..๙ read as 0..9.
_THAI_DIGITS = str.maketrans("๐๑๒๓๔๕๖๗๘๙", "0123456789")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_NUMBER = re.compile(r"\d+")

# English colour words and the Thai words that say them. A translation that drops one
# is a sign of the failure seen with the local model ("a grey light became a blue
# one"). Only lower-case words count: a capitalised one is more likely a name ("Mr
# Brown", "The Blue Door" as a title) than a colour. On the good pairs it raised no
# false alarm; the words it misses (a colour word inside another, สีทองแดง for copper
# holding แดง) only make it quieter, never louder.
COLOURS: dict[str, tuple[str, ...]] = {
    "grey": ("เทา",),
    "gray": ("เทา",),
    "blue": ("น้ำเงิน", "ฟ้า", "คราม"),
    "red": ("แดง",),
    "green": ("เขียว",),
    "yellow": ("เหลือง",),
    "white": ("ขาว",),
    "black": ("ดำ", "มืด"),
    "orange": ("ส้ม", "แสด"),
    "pink": ("ชมพู",),
    "purple": ("ม่วง",),
    "violet": ("ม่วง",),
    "brown": ("น้ำตาล",),
    "gold": ("ทอง",),
    "golden": ("ทอง",),
    "silver": ("เงิน",),
}
# A colour word, but not the first half of a compound ("grey-haired" is ผมหงอก).
_COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOURS) + r")\b(?!-)")


# Thai a translator's note holds and a story's translation does not, unless its English
# speaks of the same (then the lower-case English words listed are in it). Recorded from
# the local 1.5B model: a preamble "ข้อความที่คุณต้องการแปลงเป็นภาษาไทย" ("the text you want
# put into Thai"), and a retry's correction translated into the answer ("ด้วยคำตอบของคุณ
# ไม่ตรงกับ...": "your answer does not match...").
# แปล (translate) is not แปลก (strange) or แปลง (convert, plot).
_TRANSLATE = "แปล(?![กง])"
NOTE_PHRASES: dict[str, tuple[str, ...]] = {
    f"คำ{_TRANSLATE}": ("translat",),  # a translation
    f"การ{_TRANSLATE}": ("translat",),  # translating
    f"{_TRANSLATE}เป็น": ("translat",),  # translate into
    "ภาษาไทย": ("thai",),  # the Thai language
    "ภาษาอังกฤษ": ("english",),  # the English language
    "คำตอบของคุณ": ("answer",),  # your answer
    "ข้อความที่คุณ": ("text", "message"),  # the text you...
}
_NOTES = [(re.compile(pattern), reasons) for pattern, reasons in NOTE_PHRASES.items()]


def translator_notes(english: str, thai: str) -> list[str]:
    """What of `thai` reads as a translator's note (NOTE_PHRASES) that its English gives
    no reason for."""
    lowered = english.lower()
    return [
        found.group(0)
        for pattern, reasons in _NOTES
        if (found := pattern.search(thai)) and not any(reason in lowered for reason in reasons)
    ]


def paragraph_count(english: str) -> int:
    """Paragraphs of the English: blocks between blank lines."""
    return len(split_paragraphs(english))


def line_count(thai: str) -> int:
    """Non-empty lines of the Thai: a model may part its paragraphs by one line break."""
    return sum(1 for line in thai.splitlines() if line.strip())


def spacing_chars(text: str) -> int:
    """Characters that take room on the line: not white space, not combining marks."""
    return sum(1 for c in text if not c.isspace() and unicodedata.category(c) != "Mn")


def length_ratio(english: str, thai: str) -> float | None:
    """Thai spacing characters per English one; None when the English is too short to judge."""
    english_chars = spacing_chars(english)
    if english_chars < MIN_CHARS_FOR_RATIO:
        return None
    return spacing_chars(thai) / english_chars


def _numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(_THOUSANDS.sub("", text.translate(_THAI_DIGITS))))


def missing_numbers(english: str, thai: str) -> list[str]:
    """Numbers of two or more digits in the English that the Thai lacks, in Arabic or Thai digits.

    A single digit is not checked: Thai writes small counts as words with a classifier
    (สองลำ, คนหนึ่ง, ภาพเดียว), so its absence as a digit proves nothing. Years, times,
    ages and amounts are kept as digits.
    """
    found = _numbers(thai)
    wanted = _NUMBER.findall(_THOUSANDS.sub("", english))
    missing: dict[str, None] = {}
    for number in wanted:
        if len(number) >= 2 and number not in found:
            missing.setdefault(number, None)
    return list(missing)


def missing_colours(english: str, thai: str) -> list[str]:
    """Lower-case colour words of the English none of whose Thai words is in the Thai."""
    missing: dict[str, None] = {}
    for match in _COLOUR_WORD.finditer(english):
        word = match.group(1)
        if not any(thai_word in thai for thai_word in COLOURS[word]):
            missing.setdefault(word, None)
    return list(missing)


def problems(english: str, thai: str, spellings: Mapping[str, str] | None = None) -> list[str]:
    """Why ``thai`` may not be a faithful translation of ``english``, in plain words; [] if none found.

    With ``spellings`` (English name: its Thai spelling), a name of the English whose
    spelling the Thai lacks is one reason.
    """
    found = []
    wanted, got = paragraph_count(english), line_count(thai)
    # More is fine: a capable model may split a long paragraph in two.
    if got < wanted:
        found.append(f"it has {_count(got, 'paragraph')} where the English has {wanted}")
    ratio = length_ratio(english, thai)
    if ratio is not None and ratio < MIN_LENGTH_RATIO:
        found.append("it is much shorter than the English")
    elif ratio is not None and ratio > MAX_LENGTH_RATIO:
        found.append("it is much longer than the English")
    numbers = missing_numbers(english, thai)
    if numbers:
        found.append(f"{_listed('number', numbers)} {_verb(numbers)} missing")
    colours = missing_colours(english, thai)
    if colours:
        found.append(f"{_listed('colour', colours)} {_verb(colours)} missing")
    if translator_notes(english, thai):
        found.append("it talks about the translation instead of only translating")
    spelt = spellings or {}
    for name in misspelt_names(english, thai, spelt):
        found.append(f"the name {name} is not written {spelt[name]}")
    return found


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _listed(noun: str, items: list[str]) -> str:
    return f"the {noun} {items[0]}" if len(items) == 1 else f"the {noun}s {', '.join(items)}"


def _verb(items: list[str]) -> str:
    return "is" if len(items) == 1 else "are"
