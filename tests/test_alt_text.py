"""Alt text: a plain sentence of what each picture shows, in both languages."""

from __future__ import annotations

import pytest

from bus.rpc import RemoteFailure
from contracts.messages import (
    Failure,
    FailureCode,
    Frame,
    Label,
    SceneFacts,
    Translate,
    Translated,
    Usage,
    VideoInfo,
    WriteStory,
)
from gateway.thai import translate_lines
from story_service.alt_text import describe, describe_video
from story_service.service import alt_texts

CAT = SceneFacts(
    labels=[
        Label(name="tabby, tabby cat", confidence=0.81),
        Label(name="tiger cat", confidence=0.1),
    ],
    faces=0,
    colors=["orange", "brown", "white"],
    light="warm",
)


def test_a_likely_thing_is_said_plainly_and_a_possible_one_as_maybe():
    assert describe(CAT) == "A photo of a tabby cat, in warm light, mostly orange and brown."
    maybe = SceneFacts(labels=[Label(name="espresso", confidence=0.4)], faces=2, text="OPEN  24h")
    assert (
        describe(maybe)
        == 'A photo that may show an espresso, with 2 people, with the words "OPEN 24h".'
    )


def test_the_light_is_named_once():
    facts = SceneFacts(faces=1, light="daylight/indoor light")
    assert describe(facts) == "A photo of one person, in daylight or indoor light."
    assert (
        describe(SceneFacts(faces=1, light="night/dark")) == "A photo of one person, in the dark."
    )


def test_a_guess_is_not_claimed():
    guess = SceneFacts(labels=[Label(name="bobsled", confidence=0.19)], faces=1, light="bright")
    assert describe(guess) == "A photo of one person, in bright light."
    assert describe(SceneFacts()) == "A photo whose subject could not be made out."


def test_a_video_has_one_sentence_from_what_its_frames_show_most():
    frames = [CAT, CAT, SceneFacts(labels=[Label(name="sofa", confidence=0.7)])]
    assert describe_video(frames, 12.4).startswith("A 12-second video of a tabby cat")
    assert describe_video([CAT], 200).startswith("A 3-minute video of a tabby cat")


def _frame(facts: SceneFacts | None) -> Frame:
    return Frame(object="o", width=1, height=1, facts=facts)


def test_the_story_service_writes_one_a_photo_in_story_order_and_none_without_facts():
    photos = WriteStory(request_id="r", frames=[_frame(CAT), _frame(SceneFacts())])
    assert alt_texts(photos) == [describe(CAT), describe(SceneFacts())]
    video = WriteStory(
        request_id="r",
        frames=[_frame(CAT), _frame(CAT)],
        video=VideoInfo(duration=5, width=1, height=1, fps=25, has_audio=False),
    )
    assert len(alt_texts(video)) == 1
    seen = WriteStory(request_id="r", frames=[_frame(None)])  # a vision model: no facts
    assert alt_texts(seen) == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("แมว\n\nกาแฟ", ["แมว", "กาแฟ"]),
        ("แมวกับกาแฟ", [None, None]),  # the paragraphs do not line up
    ],
)
async def test_the_alt_text_is_translated_in_one_call_paragraph_by_paragraph(answer, expected):
    sent: list[Translate] = []

    async def translate(request: Translate) -> Translated:
        sent.append(request)
        return Translated(text=answer, usage=Usage(input_tokens=5, output_tokens=3), model="m")

    thai, usage = await translate_lines(translate, "r", ["A cat.", "A coffee."])
    assert thai == expected and usage.total_tokens == 8
    assert [request.text for request in sent] == ["A cat.\n\nA coffee."]
    assert await translate_lines(translate, "r", []) == ([], Usage())


async def test_a_failed_alt_text_translation_loses_no_story():
    async def translate(request: Translate) -> Translated:
        raise RemoteFailure(Failure(code=FailureCode.UPSTREAM_UNAVAILABLE, detail="down"))

    assert await translate_lines(translate, "r", ["A cat."]) == ([None], Usage())
