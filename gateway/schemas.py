"""The JSON bodies the gateway answers with (and documents in OpenAPI)."""

from __future__ import annotations

import msgspec

from contracts.messages import Usage
from contracts.text import is_title, split_paragraphs


class TokenUsage(msgspec.Struct, kw_only=True):
    """A ``contracts.messages.Usage`` as the response shows it (the seed's shape, with the
    total): token counts are added up as Usage and become this only here."""

    input_tokens: int
    output_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> TokenUsage:
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )


class StageUsage(msgspec.Struct, kw_only=True):
    story: TokenUsage
    translation: TokenUsage


class Models(msgspec.Struct, kw_only=True):
    story: str
    translation: str
    # False: the story model cannot see images and wrote from what perception measured
    # in the pictures (the offline default); null: the story service did not say.
    story_saw_pictures: bool | None = None


class Timings(msgspec.Struct, kw_only=True):
    """Wall-clock milliseconds each stage took, as the gateway saw it."""

    frames: float
    story: float
    translation: float
    total: float


class Title(msgspec.Struct, kw_only=True):
    """The story's title, in both languages: its first line, and that line's translation."""

    english: str
    thai: str | None = None  # null when the Thai's first paragraph is not the title's


class AltText(msgspec.Struct, kw_only=True):
    """What one picture shows, plainly, for screen readers and photo libraries."""

    english: str
    thai: str | None = None  # null when its translation failed or did not line up


class AnalyzeResponse(msgspec.Struct, kw_only=True):
    """The seed contract (english, thai, token_usage) plus additive detail."""

    english: str
    thai: str
    token_usage: TokenUsage  # story + translation, summed
    usage_by_stage: StageUsage
    models: Models
    media: str  # "image" or "video"; "video" too for one animated GIF or WebP, told as one
    frames_used: int
    # Photos: "captured" when every one carried its capture time and they were told in
    # the order they were taken, else "uploaded" (the order they were sent). Null for a video.
    order: str | None = None
    request_id: str
    timings_ms: Timings | None = None
    # US dollars, from the token usage and the operator's price table (IMGSTORY_PRICES);
    # null when no table is set or a model is not in it.
    estimated_cost_usd: float | None = None
    # Parts of the Thai that may not match the English (a paragraph missing, a number
    # or a colour lost) even after they were translated again, in plain words: the
    # Thai is then a rough draft. Empty when every check passed.
    warnings: list[str] = msgspec.field(default_factory=list)
    # The story's title line, and its Thai; null when the story has no title line.
    title: Title | None = None
    # A plain sentence of what each picture shows, in story order (one for a video).
    alt_text: list[AltText] = msgspec.field(default_factory=list)


def title_of(english: str, thai: str) -> Title | None:
    """The title of a story and of its translation, which has as many paragraphs when
    it is faithful (the title is its first one). The Thai's first paragraph is taken for
    the title only when it is as short as a title: a small model has dropped the title
    and added a note, which kept the count and moved every paragraph up one."""
    paragraphs = split_paragraphs(english)
    if len(paragraphs) < 2 or not is_title(paragraphs[0]):
        return None
    translated = split_paragraphs(thai)
    first = translated[0] if len(translated) == len(paragraphs) else ""
    short = "\n" not in first and len(first) <= max(40, 2 * len(paragraphs[0]))
    return Title(english=paragraphs[0], thai=first if first and short else None)


class ErrorResponse(msgspec.Struct, kw_only=True):
    """The seed's error body, plus the request's id (also in the X-Request-ID header)."""

    detail: str
    request_id: str | None = None


class Health(msgspec.Struct, kw_only=True):
    status: str
    nats: bool = True
    bucket: bool = True  # the blob bucket's stream answers
    services: dict[str, bool] = msgspec.field(default_factory=dict)
