"""The scene sheet: measured facts about each picture, written for a text-only model.

Every fact says how sure perception is, so the model builds on what is likely and
treats guesses as guesses (ImageNet calls an astronaut a bobsled at 19 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts.messages import Label, SceneFacts

LIKELY = 0.6  # at or above: state it
POSSIBLE = 0.3  # at or above: "possibly"; below: "an uncertain guess"
IGNORED = 0.08  # below: not worth the model's attention


@dataclass(frozen=True)
class SheetPicture:
    facts: SceneFacts = field(default_factory=SceneFacts)
    timestamp: float | None = None  # seconds into the video; None for photos
    since: str | None = None  # photos told in capture order: "two hours later", say


def format_clock(seconds: float) -> str:
    """Format seconds as a video clock, e.g. 2.5 -> "0:02.5", 3725 -> "1:02:05.0"."""
    tenths = round(max(seconds, 0.0) * 10)
    minutes, tenth_seconds = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    secs = f"{tenth_seconds // 10:02d}.{tenth_seconds % 10}"
    return f"{hours}:{minutes:02d}:{secs}" if hours else f"{minutes}:{secs}"


def _certainty(confidence: float) -> str:
    if confidence >= LIKELY:
        return "likely"
    if confidence >= POSSIBLE:
        return "possibly"
    return "uncertain guess"


def _labels(labels: Sequence[Label]) -> str | None:
    kept = [label for label in labels if label.confidence >= IGNORED]
    if not kept:
        return "nothing the classifier recognises with any confidence"
    return "; ".join(
        f"{label.name} ({_certainty(label.confidence)}, {label.confidence:.0%})" for label in kept
    )


def _people(facts: SceneFacts) -> str | None:
    if facts.faces is None:
        return None
    if facts.faces == 0:
        return "no human face detected" + (
            " (a person may still be present)" if facts.people else ""
        )
    # Said in words a story uses: ImageNet has no "person" label, so without this line a
    # picture of someone names only the things around them (issue 7 asks for it).
    if facts.faces == 1:
        return "a person (1 human face detected)"
    return f"{facts.faces} people ({facts.faces} human faces detected)"


def picture_lines(facts: SceneFacts, *, share_place: bool) -> list[str]:
    """The sheet's bullet lines for one picture."""
    lines = [f"may show: {_labels(facts.labels)}"]
    people = _people(facts)
    if people:
        # Who is in the picture comes first when someone is: the story is about them.
        if facts.faces:
            lines.insert(0, f"people: {people}")
        else:
            lines.append(f"people: {people}")
    look = ", ".join(facts.colors)
    if look or facts.light:
        lines.append(f"look: {look or 'colours unknown'}; light: {facts.light or 'unknown'}")
    if facts.text:
        lines.append(f'text visible in the picture (OCR, may contain errors): "{facts.text}"')
    when = [f"taken {facts.taken_at}" if facts.taken_at else "", facts.camera or ""]
    if share_place and facts.place:
        when.append(f"near {facts.place}")
    if any(when):
        lines.append("capture: " + ", ".join(w for w in when if w))
    return lines


def scene_sheet(
    pictures: Sequence[SheetPicture],
    *,
    video_duration: float | None = None,
    transcript: str | None = None,
    transcript_language: str | None = None,
    share_place: bool = True,
) -> str:
    """The whole sheet as text: one block per picture, then the video facts."""
    if not pictures:
        raise ValueError("a scene sheet needs at least one picture")
    blocks = []
    total = len(pictures)
    for number, picture in enumerate(pictures, start=1):
        if picture.timestamp is not None:
            title = f"Frame {number} at {format_clock(picture.timestamp)}"
        else:
            title = f"Photo {number} of {total}"
            if picture.since:
                title += f", taken {picture.since}"
        body = "\n".join(
            f"- {line}" for line in picture_lines(picture.facts, share_place=share_place)
        )
        blocks.append(f"{title}\n{body}")
    if video_duration is not None:
        blocks.append(
            f"The frames come in order from one video lasting {format_clock(video_duration)}."
        )
    if transcript:
        language = f" (language: {transcript_language})" if transcript_language else ""
        blocks.append(f"Spoken in the video{language}:\n<transcript>\n{transcript}\n</transcript>")
    return "\n\n".join(blocks)
