"""The story guards: garbage small models write around a story is repaired, or the story
is asked for once more; a clean story is never touched."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.text import join_paragraphs, split_paragraphs
from devstack.fake_answers import Reply, default_answer, wants_thai
from devstack.fake_openai import FakeOpenAI
from llm import ModelUnavailable, OpenAIChat
from story_service.guards import Problem, review
from story_service.paragraphs import ParagraphCutter
from story_service.story import CORRECTION, StoryFrame, tidy_paragraphs, write_story
from tests.bad_stories import BAD, CLEAN, FRAMES, GOOD, SOURCE, Bad
from tests.media import sample_photo
from tests.support.fixtures import ClientFactory

REPAIRABLE = [bad for bad in BAD if bad.repaired is not None]
HOPELESS = [bad for bad in BAD if bad.repaired is None]


def streamed(text: str, size: int) -> list[str]:
    """The paragraphs the story service publishes while ``text`` arrives ``size``
    characters at a time."""
    heard: list[str] = []
    cutter = ParagraphCutter(lambda _, paragraph: heard.append(paragraph), tidy_paragraphs)
    for start in range(0, len(text), size):
        cutter.feed(text[start : start + size])
    cutter.close()
    return heard


@pytest.mark.parametrize("bad", REPAIRABLE, ids=lambda bad: bad.name)
def test_recorded_garbage_is_repaired(bad: Bad) -> None:
    verdict = review(bad.raw, SOURCE)

    assert verdict.text == bad.repaired
    assert verdict.usable
    assert {str(problem) for problem in verdict.found} == bad.found


@pytest.mark.parametrize("bad", HOPELESS, ids=lambda bad: bad.name)
def test_recorded_garbage_that_repair_cannot_save_asks_again(bad: Bad) -> None:
    verdict = review(bad.raw, SOURCE)

    assert not verdict.usable
    assert bad.found <= {str(problem) for problem in verdict.found}


@pytest.mark.parametrize("bad", [b for b in REPAIRABLE if b.streamed], ids=lambda b: b.name)
@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_paragraphs_streamed_are_the_repaired_ones(bad: Bad, size: int) -> None:
    # The gateway translates what it hears; the same text at the end means no second
    # translation of any paragraph.
    assert streamed(bad.raw, size) == split_paragraphs(review(bad.raw, SOURCE).text)


@pytest.mark.parametrize("story", CLEAN)
def test_a_clean_story_is_never_changed(story: str) -> None:
    verdict = review(story, SOURCE)
    assert verdict.text == story
    assert verdict.found == frozenset()
    assert verdict.usable
    assert streamed(story, 5) == split_paragraphs(story)


def test_the_fakes_default_story_is_clean() -> None:
    for pictures in (1, 3):
        messages = [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "x"}}] * pictures,
            }
        ]
        story = default_answer(messages)
        assert review(story, SOURCE) == review(story)
        assert review(story).text == story and not review(story).found


@pytest.mark.parametrize("bad", BAD, ids=lambda bad: bad.name)
def test_a_reviewed_story_is_written_as_the_text_model_writes_paragraphs(bad: Bad) -> None:
    text = review(bad.raw, SOURCE).text
    assert join_paragraphs(split_paragraphs(text)) == text


def test_a_paragraph_whose_echo_is_dropped_is_stripped_like_any_other() -> None:
    source = "Write a short, vivid, creative story inspired by these pictures."
    story = (
        "The Walk\n\nWrite a short, vivid, creative story inspired by these pictures.\n"
        "   Mara walked home in the rain. She smiled at Tom. \n\nThe end."
    )
    verdict = review(story, source)
    assert (
        verdict.text == "The Walk\n\nMara walked home in the rain. She smiled at Tom.\n\nThe end."
    )
    assert Problem.ECHO in verdict.found


CLEAN_PARAGRAPHS = [p for story in CLEAN for p in split_paragraphs(story) if p.endswith(".")]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["Copper Evening", "The Quiet Harbour", "Rain on Soi 11", ""]),
    st.lists(st.sampled_from(CLEAN_PARAGRAPHS), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=80),
)
def test_any_clean_story_is_never_changed(title: str, paragraphs: list[str], size: int) -> None:
    story = "\n\n".join([title, *paragraphs] if title else paragraphs)
    verdict = review(story, SOURCE)
    assert verdict.text == story
    assert verdict.usable and not verdict.found
    assert streamed(story, size) == split_paragraphs(story)


def test_unusable_answers_say_what_is_wrong() -> None:
    assert review("").unresolved == {Problem.EMPTY}
    assert Problem.NOT_PROSE in review("- one\n- two\n- three").unresolved
    assert Problem.STAGE_DIRECTION in review("Hello, [Name]. It rained all day.").unresolved


# Through the real OpenAI client and the fake server.

MODEL = "gpt-test-vision"
BAD_ANSWER = next(bad for bad in BAD if bad.name == "mostly the sheet").raw


@pytest.fixture
def chat(make_client: ClientFactory) -> OpenAIChat:
    return OpenAIChat(make_client(), MODEL)


async def test_a_garbage_answer_is_asked_for_once_more_with_a_note(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(
        Reply(BAD_ANSWER, prompt_tokens=300, completion_tokens=120),
        Reply("**Title:** " + GOOD, prompt_tokens=340, completion_tokens=150),
    )
    heard: list[str] = []
    retries: list[None] = []

    story = await write_story(
        chat,
        FRAMES,
        None,
        None,
        on_text=heard.append,
        on_retry=lambda: retries.append(None),
    )

    assert story.text == GOOD  # the second answer, repaired
    assert (story.usage.input_tokens, story.usage.output_tokens) == (640, 270)
    assert len(retries) == 1
    first, second = fake.requests
    assert second.messages[: len(first.messages)] == first.messages
    [note] = second.messages[len(first.messages) :]
    assert note["role"] == "user"
    assert note["content"].startswith(CORRECTION.split("(")[0])
    assert "prompt echo" in note["content"]
    # Only the first answer was streamed: the second replaces it whole.
    assert "".join(heard) == BAD_ANSWER
    assert not second.get("stream")


async def test_a_good_answer_costs_one_call(fake: FakeOpenAI, chat: OpenAIChat) -> None:
    fake.script(Reply(GOOD, prompt_tokens=300, completion_tokens=150))
    retries: list[None] = []

    story = await write_story(chat, FRAMES, None, None, on_retry=lambda: retries.append(None))

    assert story.text == GOOD
    assert (story.usage.input_tokens, story.usage.output_tokens) == (300, 150)
    assert len(fake.requests) == 1 and retries == []


async def test_a_repairable_answer_is_repaired_without_asking_again(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    everything = next(bad for bad in BAD if bad.name == "everything at once")
    fake.script(Reply(everything.raw))

    story = await write_story(chat, [StoryFrame(FRAMES[0].jpeg)], None, None)

    assert story.text == GOOD
    assert len(fake.requests) == 1


async def test_two_garbage_answers_keep_the_better_and_warn(
    fake: FakeOpenAI, chat: OpenAIChat, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(
        Reply("**Copper Evening**", prompt_tokens=300, completion_tokens=4),
        Reply("Copper Evening\n\n" + BAD_ANSWER, prompt_tokens=340, completion_tokens=200),
        Reply("a third answer must never be asked for"),
    )

    with caplog.at_level(logging.WARNING, logger="story_service.story"):
        story = await write_story(chat, FRAMES, None, None)

    assert len(fake.requests) == 2
    assert fake.pending == 1
    assert (story.usage.input_tokens, story.usage.output_tokens) == (640, 204)
    # Both fail; the second has more words left (the first only a title): it is kept.
    assert story.text == "Copper Evening\n\nLena drank her espresso."
    assert any("still not clean" in record.getMessage() for record in caplog.records)


async def test_no_second_answer_when_it_could_not_finish_in_time(
    fake: FakeOpenAI, chat: OpenAIChat, caplog: pytest.LogCaptureFixture
) -> None:
    fake.latency = 0.3
    fake.script(Reply(BAD_ANSWER), Reply(GOOD))
    retries: list[None] = []

    # The first answer takes 0.3 s of the 0.5 s left: one as long would come too late.
    with caplog.at_level(logging.WARNING, logger="story_service.story"):
        story = await write_story(
            chat,
            FRAMES,
            None,
            None,
            on_retry=lambda: retries.append(None),
            deadline=time.time() + 0.5,
        )

    assert story.text == review(BAD_ANSWER, SOURCE).text != ""
    assert fake.pending == 1 and retries == []
    assert any("no time to ask again" in record.getMessage() for record in caplog.records)


async def test_answers_with_nothing_left_are_the_models_failure(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply("[The scene is set in a kitchen.]"), Reply("[A cup waits.]"))

    with pytest.raises(ModelUnavailable, match="no usable story"):
        await write_story(chat, FRAMES, None, None)

    assert len(fake.requests) == 2


# Through the gateway: what is left of a replaced answer is never translated (its last
# paragraph, still unfinished when the answer is judged, is dropped).

GARBAGE_ONLY = (
    "Scene sheet:\n\nPhoto 1 of 1\n\n[The scene is set in a quiet kitchen.]\n\n"
    "The story should continue with more detail.\n\nA cup of espresso waited in the kitchen."
)


@pytest.mark.usefixtures("blob_store")
async def test_a_replaced_answer_is_translated_only_in_its_final_form(
    gateway: Any, openai: FakeOpenAI
) -> None:
    openai.script(
        Reply(GARBAGE_ONLY, prompt_tokens=200, completion_tokens=30),
        Reply(GOOD, prompt_tokens=230, completion_tokens=140),
    )
    async with gateway() as client:
        response = await client.post(
            "/analyze/stream",
            files=[("files", ("cat.png", sample_photo("chelsea.png").read_bytes()))],
        )
    last = response.text.replace("\r\n", "\n").strip().split("\n\n")[-1]
    assert last.startswith("event: result")
    result = json.loads(last.partition("data: ")[2])
    assert result["english"] == GOOD
    assert result["usage_by_stage"]["story"] == {
        "input_tokens": 430,
        "output_tokens": 170,
        "total_tokens": 600,
    }
    stories = [r for r in openai.requests if not wants_thai(r.messages)]
    translations = [r for r in openai.requests if wants_thai(r.messages)]
    assert len(stories) == 2
    assert translations
    assert not any("kitchen" in r.text or "Scene sheet" in r.text for r in translations)
