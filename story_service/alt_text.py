"""Alt text from the scene sheet: one plain sentence of what a picture shows.

For screen readers and photo libraries, written from what perception measured (the
model that cannot see wrote the story from the same facts), and worded as uncertain
where the facts are: "may show" for a possible label, nothing claimed for a guess.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from contracts.messages import Label, SceneFacts
from story_service.scene import LIKELY, POSSIBLE

_OCR_CHARS = 60  # of the text seen in the picture, quoted
# The frame service's words for the light (frame_service.colours), as a sentence says them.
_LIGHT = {
    "bright daylight": "in bright daylight",
    "daylight/indoor light": "in daylight or indoor light",
    "dim": "in dim light",
    "night/dark": "in the dark",
}


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _subject(labels: Sequence[Label]) -> tuple[str, str] | None:
    """The picture's most likely thing and how sure: ("likely" | "possibly", noun)."""
    top = max(labels, key=lambda label: label.confidence, default=None)
    if top is None or top.confidence < POSSIBLE:
        return None
    # ImageNet's names list synonyms ("tabby, tabby cat"): the most telling has most words.
    names = [name.strip() for name in top.name.split(",") if name.strip()]
    noun = max(names, key=lambda name: len(name.split()))
    return ("likely" if top.confidence >= LIKELY else "possibly"), _article(noun)


def _people(faces: int | None) -> str | None:
    if not faces:
        return None
    return "one person" if faces == 1 else f"{faces} people"


def describe(facts: SceneFacts, what: str = "A photo") -> str:
    """One sentence of what a picture shows, e.g. "A photo that may show a tabby cat, in
    warm light, mostly orange and brown." ``what`` names the picture ("A photo", "A
    12-second video")."""
    subject = _subject(facts.labels)
    people = _people(facts.faces)
    if subject is not None:
        certainty, noun = subject
        sentence = f"{what} of {noun}" if certainty == "likely" else f"{what} that may show {noun}"
        if people:
            sentence += f", with {people}"
    elif people:
        sentence = f"{what} of {people}"
    else:
        sentence = f"{what} whose subject could not be made out"
    look = []
    if facts.light:
        look.append(_LIGHT.get(facts.light, f"in {facts.light} light"))
    if facts.colors:
        look.append("mostly " + " and ".join(facts.colors[:2]))
    if look:
        sentence += ", " + ", ".join(look)
    if facts.text:
        seen = " ".join(facts.text.split())[:_OCR_CHARS].replace('"', "'")
        sentence += f', with the words "{seen}"'
    return sentence + "."


def describe_video(frames: Sequence[SceneFacts], duration: float) -> str:
    """One sentence for a whole video: what its frames show most often."""
    names = Counter(
        label.name for facts in frames for label in facts.labels[:1] if label.confidence >= POSSIBLE
    )
    best = names.most_common(1)[0][0] if names else None
    faces = max((facts.faces or 0 for facts in frames), default=0)
    summary = SceneFacts(
        labels=[
            max(
                (label for facts in frames for label in facts.labels if label.name == best),
                key=lambda label: label.confidence,
            )
        ]
        if best
        else [],
        faces=faces,
        colors=frames[0].colors if frames else [],
        light=frames[0].light if frames else None,
    )
    return describe(summary, f"A {_length(duration)} video")


def _length(seconds: float) -> str:
    """A video's length as alt text says it: "12-second", "3-minute"."""
    if seconds < 90:
        return f"{max(1, round(seconds))}-second"
    return f"{round(seconds / 60)}-minute"
