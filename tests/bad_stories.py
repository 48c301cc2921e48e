"""Stories as small models really write them: the garbage around them, and clean ones.

The bad answers are the kinds seen from the local Qwen2.5 1.5B writing from a scene
sheet (issue 7), each with the text the guards must make of it, or None when the
answer cannot be saved and a second one must be asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from contracts.messages import Label, SceneFacts
from story_service.story import StoryFrame, build_sheet_messages, prompt_source

JPEG = b"\xff\xd8\xff\xe0 not decoded"
FRAMES = [
    StoryFrame(
        JPEG,
        facts=SceneFacts(
            labels=[Label("espresso", 0.9)],
            faces=0,
            colors=["brown", "cream"],
            light="warm indoor light",
        ),
    ),
    StoryFrame(
        JPEG,
        facts=SceneFacts(
            labels=[Label("moped", 0.46), Label("crash helmet", 0.12)],
            faces=0,
            colors=["red", "grey"],
            light="overcast daylight",
        ),
    ),
    StoryFrame(
        JPEG,
        facts=SceneFacts(
            labels=[Label("seashore", 0.63), Label("sandbar", 0.2)],
            faces=2,
            colors=["blue", "gold"],
            light="golden hour",
        ),
    ),
]
MESSAGES = build_sheet_messages(FRAMES, None, None)
SOURCE = prompt_source(MESSAGES)

TITLE = "Copper Evening"
BODY = (
    "Lena wrapped both hands around the little cup of espresso and let the warm, bitter "
    "smell wake her. Outside the café window the sky hung low and grey over the street.\n\n"
    "Her red moped waited by the kerb, beaded with the morning's drizzle. She wiped the "
    "seat with her sleeve, pulled on her helmet and rode toward the coast, the engine "
    "buzzing like an impatient bee.\n\n"
    "By evening the clouds had broken. On the shore she found Tomas already waiting, his "
    "shoes in his hand, and together they watched the sea turn from blue to gold until "
    "the light was gone."
)
GOOD = f"{TITLE}\n\n{BODY}"


@dataclass(frozen=True)
class Bad:
    name: str
    raw: str
    repaired: str | None  # None: not a story even after repair; ask again
    found: frozenset[str]
    # The paragraphs streamed while it is written are already the final ones (the
    # repairs needed are all inside one paragraph).
    streamed: bool = True


def _bad(name: str, raw: str, repaired: str | None, *found: str, streamed: bool = True) -> Bad:
    return Bad(name, raw, repaired, frozenset(found), streamed)


BAD = [
    _bad("bold title prefix", f"**Title:** {TITLE}\n\n{BODY}", GOOD, "markdown"),
    _bad("bold title", f"**{TITLE}**\n\n{BODY}", GOOD, "markdown"),
    _bad("heading title", f"### {TITLE}\n\n{BODY}", GOOD, "markdown"),
    _bad(
        "title prefix on the first line of the story",
        f'Title: "{TITLE}"\n{BODY}',
        GOOD,
        "markdown",
    ),
    _bad(
        "opens with a bracketed scene",
        "[The scene is set in a small seaside town on a grey, drizzly morning.]\n\n" + GOOD,
        GOOD,
        "stage directions",
    ),
    _bad(
        "bracketed directions between sentences",
        f"{TITLE}\n\n[Morning. A café by the sea.] "
        + BODY.replace("grey over the street.", "grey over the street. [Pause.]"),
        GOOD,
        "stage directions",
    ),
    _bad(
        "ends asking for more",
        GOOD + " The story should continue with more detail about their evening.",
        GOOD,
        "comments about the story",
    ),
    _bad(
        "ends asking for more, in a paragraph of its own",
        GOOD + "\n\nThe story should continue with more detail.",
        GOOD,
        "comments about the story",
    ),
    _bad(
        "here is a story",
        "Here is a short story inspired by the scene sheet:\n\n" + GOOD,
        GOOD,
        "preamble",
    ),
    _bad(
        "sure, here's a story, on the title's line",
        f"Sure! Here's a story based on the photos: {TITLE}\n\n{BODY}",
        GOOD,
        "preamble",
    ),
    _bad(
        "notes and word count after the story",
        GOOD
        + "\n\nNote: I used only the facts marked likely, and left out the crash helmet."
        + "\n\n(Word count: 180)",
        GOOD,
        "comments about the story",
    ),
    _bad(
        "a closing comment and an offer",
        GOOD + "\n\nThis story captures the quiet joy of a day by the sea. "
        "Let me know if you'd like any changes!",
        GOOD,
        "comments about the story",
    ),
    _bad(
        "markdown emphasis, rules and a bulleted title",
        f"# {TITLE}\n\n---\n\n"
        + BODY.replace("little cup", "*little* cup").replace("red moped", "**red moped**")
        + "\n\n* * *",
        GOOD,
        "markdown",
    ),
    _bad(
        "story label",
        f"{TITLE}\n\nStory: {BODY}",
        GOOD,
        "preamble",
    ),
    _bad(
        "certainties echoed inside sentences",
        GOOD.replace("little cup of espresso", "little cup of espresso (likely, 90%)").replace(
            "On the shore", "On the seashore likely (63%)"
        ),
        GOOD.replace("On the shore", "On the seashore"),
        "prompt echo",
    ),
    _bad(
        "the sheet echoed before the story",
        "Scene sheet:\n\nPhoto 1 of 3\n- may show: espresso (likely, 90%)\n"
        "- people: no human face detected\n\n" + GOOD,
        GOOD,
        "prompt echo",
        "markdown",
    ),
    _bad(
        "picture labels as section heads",
        f"{TITLE}\n\n"
        + "\n\n".join(f"Photo {n} of 3: {p}" for n, p in enumerate(BODY.split("\n\n"), start=1)),
        GOOD,
        "prompt echo",
    ),
    _bad(
        "style guidance echoed in its tags",
        "<style_guidance>\nWrite a short, vivid, creative story inspired by these pictures.\n"
        "</style_guidance>\n\n" + GOOD,
        GOOD,
        "prompt echo",
        streamed=False,  # telling the guidance from a story needs the prompt
    ),
    _bad(
        "the last instruction echoed",
        "Now write the story, in English.\n\n" + GOOD,
        GOOD,
        "prompt echo",
        streamed=False,
    ),
    _bad(
        "cut off at the token limit",
        GOOD + "\n\nWhen the first star appeared, Lena turned to Tomas and said that she",
        GOOD,
        "cut off",
        streamed=False,
    ),
    _bad(
        "cut off mid-paragraph",
        GOOD.replace("until the light was gone.", "until the light was gone. Then the"),
        GOOD,
        "cut off",
        streamed=False,
    ),
    _bad(
        "everything at once",
        "Sure! Here is your story:\n\n**Title:** Copper Evening\n\n"
        "[The scene is set in a café, then on a road, then by the sea.]\n\n"
        + BODY
        + "\n\nThe story should continue with more detail.\n\n(Word count: 98)",
        GOOD,
        "preamble",
        "markdown",
        "stage directions",
        "comments about the story",
    ),
    # Nothing to save: a second answer is asked for.
    _bad("empty", "   \n\n  ", None),
    _bad(
        "mostly the sheet",
        MESSAGES[1]["content"].replace("Now write the story, in English.", "")
        + "\n\nLena drank her espresso.",
        None,
        "prompt echo",
        "markdown",
        streamed=False,
    ),
    _bad(
        "a list, not prose",
        f"{TITLE}\n\n- Lena drinks espresso\n- She rides her red moped\n"
        "- Two friends watch the sea at golden hour",
        None,
        "markdown",
    ),
    _bad("only a title", f"**{TITLE}**", None, "markdown"),
    _bad(
        "a placeholder inside a sentence",
        GOOD.replace("found Tomas", "found [Name]"),
        None,
    ),
    _bad(
        "only comments",
        "Here is a story about the photos.\n\nThe story should continue with more detail.",
        None,
        "preamble",
        "comments about the story",
    ),
]

# Answers the local model really gave (see the file's "about"), with the edits the
# guards must make to each, or None when it must be asked for again.
_ANSWERS = json.loads(Path(__file__).with_name("local_story_answers.json").read_text())["answers"]


def _recorded(
    index: int,
    name: str,
    edits: list[tuple[str, str]] | None,
    *found: str,
    cut: str = "",
    streamed: bool = True,
) -> Bad:
    """The recorded answer ``index``, repaired by ``edits`` and without ``cut`` at its end."""
    raw = repaired = _ANSWERS[index]["text"]
    for old, new in edits or []:
        assert old in repaired, old
        repaired = repaired.replace(old, new)
    assert repaired.endswith(cut)
    repaired = repaired.removesuffix(cut)
    return _bad(
        f"recorded: {name}", raw, repaired if edits is not None else None, *found, streamed=streamed
    )


RECORDED = [
    _recorded(
        0,
        "heading title, cut off",
        [("# The Grey", "The Grey")],
        "markdown",
        "cut off",
        cut=" It ran back outside, where the black cat was",
        streamed=False,
    ),
    _recorded(
        1,
        "quoted title prefix",
        [('Title: "The White and Orange Bobsled Team"', "The White and Orange Bobsled Team")],
        "markdown",
    ),
    _recorded(
        2,
        "a tour of the photographs, not a story",
        None,
        "prompt echo",
        "comments about the story",
        "cut off",
    ),
    _recorded(
        3,
        "bold title, cut off",
        [("**A Cold Day in the Desert**", "A Cold Day in the Desert")],
        "markdown",
        "cut off",
        cut=" The cat perched above them on the dune, looking up at the",
        streamed=False,
    ),
    _recorded(
        4,
        "title prefix, the scene sheet named in the last sentence",
        [
            ('Title: "White Space and Orange"', "White Space and Orange"),
            (
                " He knew that even though he couldn't see all the details on the scene sheet,"
                " he had a clear picture of what was really happening in front of him.",
                "",
            ),
        ],
        "markdown",
        "prompt echo",
    ),
    _recorded(
        5,
        "title prefix",
        [("Title: The Moped Adventure", "The Moped Adventure")],
        "markdown",
    ),
    _recorded(
        6,
        "unclosed bold title, the sheet repeated in tags between sentences, cut off",
        [
            ('**"The Grey Egyptian Cat\'s Shadow"', "The Grey Egyptian Cat's Shadow"),
            (" <style_guidance>\nThe people: no human face detected\n</style_guidance>\n", "\n\n"),
        ],
        "markdown",
        "prompt echo",
        "cut off",
        cut=" The man took photos of everything he saw, including a golden statue of",
        streamed=False,
    ),
    _recorded(
        7,
        "a refusal, not a story",
        None,
        "prompt echo",
        "comments about the story",
    ),
]
BAD += RECORDED

# Clean stories: the guards must give them back unchanged.
CLEAN = [
    GOOD,
    (
        "The Lighthouse Keeper's Cat\n\n"
        '"Let me know if you need anything," said the keeper, and the cat blinked slowly.\n\n'
        "Sure enough, by midnight the storm had found the island. Here is the story of how "
        "Mara, aged 7, kept the lamp lit: she counted 3 flashes, then 12, then 100.\n\n"
        "I hope you remember that night as I do — the rain, the light, the purring.\n\n"
        "The End"
    ),
    (
        "Rain on Soi 11\n\n"
        "The noodle stall opened at six. Steam rose; the cook hummed.\n"
        "A boy ran past with a kite…\n\n"
        "Note the way the light fell on the wet street: gold, then grey.\n\n"
        '"Certainly," said the old woman. "Tomorrow it will rain again."'
    ),
    "A six-word story: gone fishing, never came back.",
]
