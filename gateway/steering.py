"""What a person may steer a story by, besides its prompt: its length and its cast.

Both are form fields of every upload route. Each is read exactly as the OpenAPI
document states it (``LENGTH_SCHEMA``, ``CAST_SCHEMA``): a value the document calls valid
is accepted and any other is a 400 that says what to send.
"""

from __future__ import annotations

import re

from litestar.openapi.spec import OpenAPIType, Schema

from contracts.messages import CastMember, Length
from gateway.uploads import ReceivedForm, UploadError

LENGTH_FIELD = "length"
CAST_FIELD = "cast"
STEERING_FIELDS = (LENGTH_FIELD, CAST_FIELD)
CAST_MAX_CHARS = 400
CAST_MAX_LINES = 8
CAST_EXAMPLE = "Pumpkin: the orange cat\nยายสมศรี: the woman in the blue dress"

# One cast line: a name (no colon, no control character, not blank), a colon, and who or
# what it is (not blank). Lines are parted by a line break (LF or CRLF); blank lines and
# blank space around the whole are allowed.
_SPACES = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NAME = rf"[^\x00-\x1f\x7f:]*[^{_SPACES}:][^\x00-\x1f\x7f:]*"
_WHO = rf"[^\x00-\x1f\x7f]*[^{_SPACES}][^\x00-\x1f\x7f]*"
_ENTRY = rf"{_NAME}:{_WHO}"
_ENTRY_LINE = re.compile(rf"[ \t]*{_ENTRY}")
_BLANK_LINE = re.compile(r"[ \t]*")
_SEPARATOR = r"\r?\n(?:[ \t]*\r?\n)*[ \t]*"
# The same rules as one pattern, for the document (Python's re reads it as JSON Schema's
# tools do; \s is what str.strip() removes).
CAST_PATTERN = rf"^\s*(?:{_ENTRY}(?:{_SEPARATOR}{_ENTRY}){{0,{CAST_MAX_LINES - 1}}})?\s*$"

LENGTH_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    enum=[length.value for length in Length],
    description="Optional: how long a story. `short` is about 80 to 120 words, `medium` "
    "(the default) about 150 to 250, `long` about 350 to 450. The offline default model "
    "writes shorter stories (about 120 to 180 words for `medium`, at most about 260 for "
    "`long`) and says so in `warnings`.",
)
CAST_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    max_length=CAST_MAX_CHARS,
    pattern=CAST_PATTERN,
    description=f"Optional: who or what is in the pictures, by name, up to {CAST_MAX_LINES} "
    f"lines of `Name: who or what` (at most {CAST_MAX_CHARS} characters in all; names in any "
    "script). The story calls them by those names, and the Thai spells each name one way "
    "throughout (a name written in Thai is used as given). The lines are descriptions, "
    "never instructions.",
    examples=[CAST_EXAMPLE],
)


def read_length(fields: dict[str, str]) -> Length | None:
    """The form's ``length``, if sent. Raises UploadError for any other value than the three."""
    value = fields.get(LENGTH_FIELD)
    if value is None:
        return None
    try:
        return Length(value)
    except ValueError:
        choices = ", ".join(f"'{length.value}'" for length in Length)
        raise UploadError(f"'{LENGTH_FIELD}' is one of {choices}") from None


def read_cast(fields: dict[str, str]) -> list[CastMember]:
    """The form's ``cast`` ([] when not sent or blank). Raises UploadError saying which
    line breaks which rule."""
    text = fields.get(CAST_FIELD)
    if text is None:
        return []
    if len(text) > CAST_MAX_CHARS:
        raise UploadError(f"'{CAST_FIELD}' is too long: at most {CAST_MAX_CHARS} characters")
    cast: dict[str, CastMember] = {}
    lines = 0
    skipped = text[: len(text) - len(text.lstrip())].count("\n")  # blank lines before the first
    for number, line in enumerate(re.split(r"\r?\n", text.strip()), start=skipped + 1):
        if _BLANK_LINE.fullmatch(line):
            continue
        if not _ENTRY_LINE.fullmatch(line):
            raise UploadError(
                f"'{CAST_FIELD}' line {number} is not 'Name: who or what' "
                "(e.g. 'Pumpkin: the orange cat')"
            )
        lines += 1
        if lines > CAST_MAX_LINES:
            raise UploadError(
                f"'{CAST_FIELD}' line {number} is one too many: at most {CAST_MAX_LINES} lines"
            )
        name, _, who = (" ".join(part.split()) for part in line.partition(":"))
        # A name given twice is one subject, described by both lines.
        same = cast.get(name.casefold())
        if same is not None:
            who = f"{same.who}; {who}"
            name = same.name
        cast[name.casefold()] = CastMember(name=name, who=who)
    return list(cast.values())


def steer(form: ReceivedForm) -> None:
    """Read the form's ``length`` and ``cast`` into it. Raises UploadError (the form's
    files removed) when either breaks its rules."""
    try:
        form.length = read_length(form.fields)
        form.cast = read_cast(form.fields)
    except UploadError:
        form.discard()
        raise
