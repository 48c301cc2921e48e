"""Text in pictures: what tesseract reads in Thai and English, keeping only confident lines."""

import functools
import io
import itertools
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from PIL import Image

from frame_service.cancellation import CancelToken

log = logging.getLogger(__name__)

_OCR_LANGUAGES = ("tha", "eng")
_OCR_TIMEOUT = 20.0
# Sauvola's local thresholding finds a sign on a busy photo where tesseract's
# default global Otsu threshold loses it; page segmentation mode 3 (automatic)
# invents far less text in textures than the sparse-text mode 11.
_OCR_ARGS = ("--psm", "3", "-c", "thresholding_method=2", "tsv")
# Tesseract's OpenMP threads spin while they wait: on a busy 2-core machine one
# page took 4.1 s with them and 0.9 s without. The rest of the environment is
# passed on untouched (TESSDATA_PREFIX, locale).
_OCR_THREAD_LIMIT = {"OMP_THREAD_LIMIT": "1"}
_MIN_WORD_CONFIDENCE = 60.0
_MIN_LINE_CONFIDENCE = 80.0
_MIN_LINE_LETTERS = 3
_MIN_LETTER_SHARE = 0.6
_MAX_TEXT_CHARS = 300
_THAI_BLOCK = range(0x0E00, 0x0E80)
# A gap between Thai characters of at least this many line heights is a space.
_THAI_SPACE = 0.35


@dataclass(frozen=True)
class Tesseract:
    """The tesseract executable and the "+"-joined languages it will read."""

    executable: str
    languages: str


@dataclass(frozen=True)
class _Word:
    text: str
    confidence: float
    left: int
    right: int
    height: int


def ocr_available() -> bool:
    """Say whether tesseract is installed with Thai or English data, so pictures can be read."""
    return find_tesseract() is not None


@functools.cache
def find_tesseract() -> Tesseract | None:
    """Locate tesseract and the wanted languages it has; cached for the life of the process."""
    executable = shutil.which("tesseract")
    if executable is None:
        log.info("tesseract is not installed; pictures will not be read for text")
        return None
    try:
        listing = subprocess.run(
            [executable, "--list-langs"], capture_output=True, timeout=_OCR_TIMEOUT, check=True
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("tesseract --list-langs failed; pictures will not be read for text: %s", err)
        return None
    # The first line is a heading ("List of available languages in ...").
    installed = {
        name.strip() for name in listing.stdout.decode("utf-8", errors="replace").splitlines()[1:]
    }
    languages = [language for language in _OCR_LANGUAGES if language in installed]
    if not languages:
        log.warning("tesseract has no %s data; pictures will not be read for text", _OCR_LANGUAGES)
        return None
    return Tesseract(executable=executable, languages="+".join(languages))


def read_text(
    image: Image.Image, tesseract: Tesseract, cancel: CancelToken | None = None
) -> str | None:
    """The lines tesseract reads confidently in image, at most 300 characters; blocking.

    None if nothing is legible or tesseract fails or takes longer than 20 s (logged,
    never raised). Raises Cancelled soon after cancel is set, tesseract killed.
    """
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PNG", compress_level=1)
    command = [tesseract.executable, "stdin", "stdout", "-l", tesseract.languages, *_OCR_ARGS]
    tsv = _run_tesseract(command, buffer.getvalue(), cancel or CancelToken())
    return _text_from_tsv(tsv) if tsv is not None else None


def _run_tesseract(command: list[str], picture: bytes, cancel: CancelToken) -> str | None:
    """tesseract's output for picture, or None (logged) if it fails or runs out of time."""
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **_OCR_THREAD_LIMIT},
        )
    except OSError as err:
        log.warning("could not run tesseract: %s", err)
        return None
    # Killed as soon as the call is cancelled: its output then ends early.
    with process, cancel.on_cancel(process.kill):
        try:
            stdout, stderr = process.communicate(picture, timeout=_OCR_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            log.warning("tesseract took longer than %.0f s; skipping text", _OCR_TIMEOUT)
            return None
    cancel.check()
    if process.returncode != 0:
        log.warning(
            "tesseract failed with exit code %d: %s",
            process.returncode,
            stderr.decode("utf-8", errors="replace")[-200:],
        )
        return None
    return stdout.decode("utf-8", errors="replace")


def _text_from_tsv(tsv: str) -> str | None:
    """Keep the lines of tesseract's TSV output that read as confident words; None if none do."""
    # Columns: level page block par line word left top width height conf text. Level 4
    # rows are lines, level 5 rows their words.
    lines: dict[tuple[str, str, str], list[_Word]] = {}
    line_heights: dict[tuple[str, str, str], int] = {}
    for row in tsv.splitlines()[1:]:
        fields = row.split("\t")
        if len(fields) != 12 or fields[0] not in ("4", "5"):
            continue
        key = (fields[2], fields[3], fields[4])
        try:
            left, width, height = int(fields[6]), int(fields[8]), int(fields[9])
            confidence = float(fields[10])
        except ValueError:
            continue
        if fields[0] == "4":
            line_heights[key] = height
        elif fields[11].strip():
            word = _Word(fields[11].strip(), confidence, left, left + width, height)
            lines.setdefault(key, []).append(word)
    kept = [
        line
        for key, words in lines.items()
        if (line := _confident_line(words, line_heights.get(key, 0)))
    ]
    if not kept:
        return None
    # Tesseract spells SARA AM as NIKHAHIT + SARA AA, its compatibility decomposition.
    text = "\n".join(kept).replace("\u0e4d\u0e32", "\u0e33")
    if len(text) > _MAX_TEXT_CHARS:
        text = text[:_MAX_TEXT_CHARS].rsplit(maxsplit=1)[0] + "…"
    return text


def _confident_line(words: list[_Word], line_height: int) -> str | None:
    # Lone marks such as "|" are usually edges, not text; Thai vowel and tone marks
    # are not alphanumeric but belong to the letters beside them.
    confident = [
        word
        for word in words
        if word.confidence >= _MIN_WORD_CONFIDENCE
        and any(char.isalnum() or _is_thai(char) for char in word.text)
    ]
    if not confident:
        return None
    characters = sum(len(word.text) for word in confident)
    mean_confidence = sum(word.confidence * len(word.text) for word in confident) / characters
    letters = sum(char.isalpha() for word in confident for char in word.text)
    if (
        mean_confidence < _MIN_LINE_CONFIDENCE
        or letters < _MIN_LINE_LETTERS
        or letters < _MIN_LETTER_SHARE * characters
    ):
        return None
    return _join_words(confident, line_height)


def _join_words(words: list[_Word], line_height: int) -> str:
    """Join a line's words, with spaces between Thai characters only where there is a gap.

    Tesseract reports Thai one character (or mark) at a time, so its "words" must be
    glued back together, while Latin words are always whole. Gaps inside Thai words
    measured up to 0.21 line heights, spaces from 0.45.
    """
    threshold = _THAI_SPACE * (line_height or max(word.height for word in words))
    parts = [words[0].text]
    for previous, word in itertools.pairwise(words):
        thai_pair = _is_thai(previous.text[-1]) and _is_thai(word.text[0])
        if not thai_pair or word.left - previous.right >= threshold:
            parts.append(" ")
        parts.append(word.text)
    return "".join(parts)


def _is_thai(char: str) -> bool:
    return ord(char) in _THAI_BLOCK
