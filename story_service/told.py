"""A story and its pictures' alt text from one call, for a model that sees the pictures.

The model is asked for JSON (``story``, ``alt_text``) with a schema, the provider's
structured output; the story is streamed out of it as it is written (llm.structured).
A server that ignores the schema answers plain text: that is the story, with no alt text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm.chat import Completion
from llm.structured import parse_object

SCHEMA_NAME = "story"
# Room for the JSON around the story and a sentence of alt text per picture.
TOKENS_PER_PICTURE = 40
JSON_OVERHEAD_TOKENS = 20


@dataclass(frozen=True)
class Told(Completion):
    """A story as written, with one alt text per picture ([] when none was written)."""

    alt_text: list[str] = field(default_factory=list)


def story_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "story": {"type": "string"},
            "alt_text": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["story", "alt_text"],
        "additionalProperties": False,
    }


def instruction(pictures: int, video: bool) -> str:
    """What the JSON must hold, said to the model after the pictures."""
    what = (
        "one sentence for the whole video"
        if video
        else f"{pictures} sentence{'s' if pictures != 1 else ''}, one per photo in order"
    )
    return (
        'Answer with a JSON object: "story", the story as plain text (a short title line, '
        'a blank line, then the paragraphs), and "alt_text": ' + what + ", each a plain, "
        "factual description of what can be seen, for someone who cannot see it: no story, "
        "no names, nothing guessed."
    )


def extra_tokens(pictures: int) -> int:
    return JSON_OVERHEAD_TOKENS + TOKENS_PER_PICTURE * pictures


def told(answer: Completion, wanted: int) -> Told:
    """The story and alt texts of a structured answer; a plain-text answer is the story.
    Alt texts are kept only when there are as many as ``wanted`` (else none: a list that
    does not line up with the pictures would describe the wrong one)."""
    value = parse_object(answer.text)
    story = value.get("story") if value is not None else None
    if not isinstance(story, str):
        return Told(text=answer.text, usage=answer.usage, model=answer.model)
    alts = value.get("alt_text") if value is not None else None
    texts = (
        [" ".join(a.split()) for a in alts if isinstance(a, str)] if isinstance(alts, list) else []
    )
    return Told(
        text=story,
        usage=answer.usage,
        model=answer.model,
        alt_text=texts if len(texts) == wanted and all(texts) else [],
    )
