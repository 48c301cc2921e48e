"""Names spelt one way in every paragraph: spelt once, given in the prompt, checked after."""

from __future__ import annotations

import asyncio

import pytest

from devstack.fake_answers import (
    NAME_SPELLINGS,
    Delay,
    Reply,
    count_completion_tokens,
    count_prompt_tokens,
)
from devstack.fake_openai import FakeOpenAI
from llm import OpenAIChat
from tests.support.fixtures import ClientFactory
from translation_service.faithful import problems
from translation_service.names import (
    SPELL_PROMPT,
    NameSpeller,
    misspelt_names,
    spelling_instruction,
    story_names,
)
from translation_service.translate import translate_to_thai

PARAGRAPH = "At dawn Mara tied the rope while old Tom Baker watched."
MARA = "มารา"
TOM_BAKER = "ทอม เบเกอร์"
GOOD = "มาราผูกเชือกขณะที่ทอมเบเกอร์ผู้เฒ่ามองดูอยู่"
OTHER_SPELLING = "มาร่าผูกเชือกขณะที่ทอมเบเกอร์ผู้เฒ่ามองดูอยู่"


@pytest.fixture
def chat(make_client: ClientFactory) -> OpenAIChat:
    return OpenAIChat(make_client(), "gpt-test-names")


def test_a_title_gives_no_names_its_paragraphs_do() -> None:
    story = "The Quiet Harbour\n\nAt dawn Mara met Tom Baker.\n\nThen Tom left."
    assert story_names(story) == ["Mara", "Tom Baker", "Tom"]


def test_a_possessive_ends_a_name_and_long_runs_are_not_names() -> None:
    story = "We ate at Anthony Bourdain's Coffee Shop with Mara.\n\nThe Old Harbour Coffee Shop Company sold it."
    assert story_names(story) == ["Anthony Bourdain", "Coffee Shop", "Mara"]


def test_a_name_counts_as_spelt_with_or_without_spaces_inside() -> None:
    spellings = {"Mara": MARA, "Tom Baker": TOM_BAKER}
    assert misspelt_names(PARAGRAPH, GOOD, spellings) == []
    assert misspelt_names(PARAGRAPH, OTHER_SPELLING, spellings) == ["Mara"]
    # A name with no spelling is not checked.
    assert misspelt_names(PARAGRAPH, OTHER_SPELLING, {"Tom Baker": TOM_BAKER}) == []


def test_a_misspelt_name_is_a_problem_in_words() -> None:
    found = problems(PARAGRAPH, OTHER_SPELLING, {"Mara": MARA})
    assert found == [f"the name Mara is not written {MARA}"]
    assert problems(PARAGRAPH, OTHER_SPELLING) == []


def spelling_tokens(fake: FakeOpenAI) -> tuple[int, int]:
    """What the fake counted for the spelling calls it answered."""
    calls = [r for r in fake.requests if r.messages[0]["content"] == SPELL_PROMPT]
    answers = [NAME_SPELLINGS[r.messages[-1]["content"]] for r in calls]
    return (
        sum(count_prompt_tokens(r.messages) for r in calls),
        sum(count_completion_tokens(a) for a in answers),
    )


async def test_each_name_is_spelt_once_and_kept(fake: FakeOpenAI, chat: OpenAIChat) -> None:
    speller = NameSpeller(chat)

    first = await speller.spell(["Mara", "Tom Baker", "Mara"])
    again = await speller.spell(["Tom Baker"])

    assert first.spellings == {"Mara": MARA, "Tom Baker": TOM_BAKER}
    assert (first.usage.input_tokens, first.usage.output_tokens) == spelling_tokens(fake)
    assert first.usage.input_tokens > 0
    # Kept: no call, no tokens the second time.
    assert again.spellings == {"Tom Baker": TOM_BAKER}
    assert (again.usage.input_tokens, again.usage.output_tokens) == (0, 0)
    assert sorted(r.messages[-1]["content"] for r in fake.requests) == ["Mara", "Tom Baker"]
    assert all(r["temperature"] == 0.0 for r in fake.requests)


async def test_an_answer_that_is_not_thai_letters_spells_nothing(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply("Mara"), Reply("มารา (Mara)"))
    speller = NameSpeller(chat)

    assert (await speller.spell(["Mara"])).spellings == {}
    assert (await speller.spell(["Anna"])).spellings == {}
    # Greedy decoding would answer the same again: it is not asked twice.
    assert (await speller.spell(["Mara"])).spellings == {}
    assert len(fake.requests) == 2


async def test_a_nationality_is_spelt_without_language_or_people(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    # Recorded from the local model: asked for "Egyptian", it wrote "the Egyptian language".
    fake.script(Reply("ภาษาอียิปต์"), Reply("ชาวไทย"), Reply("ภาษา"))
    speller = NameSpeller(chat)

    assert (await speller.spell(["Egyptian"])).spellings == {"Egyptian": "อียิปต์"}
    assert (await speller.spell(["Thai"])).spellings == {"Thai": "ไทย"}
    assert (await speller.spell(["Language"])).spellings == {"Language": "ภาษา"}


async def test_paragraphs_at_once_share_one_spelling_call_that_outlives_a_cancel(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Delay(0.3))
    speller = NameSpeller(chat)

    first = asyncio.create_task(speller.spell(["Mara"]))
    second = asyncio.create_task(speller.spell(["Mara"]))
    await asyncio.sleep(0.1)
    first.cancel()  # the paragraph that started the call is stopped
    spelt = await second

    assert spelt.spellings == {"Mara": MARA}
    assert len(fake.requests) == 1
    assert (await speller.spell(["Mara"])).spellings == {"Mara": MARA}
    assert len(fake.requests) == 1


async def test_the_spelling_is_asked_for_checked_and_its_tokens_counted(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(
        Delay(0.0),  # the two spelling calls, by the default responder
        Delay(0.0),
        Reply(OTHER_SPELLING, prompt_tokens=100, completion_tokens=50),
        Reply(GOOD, prompt_tokens=120, completion_tokens=50),
    )

    result = await translate_to_thai(chat, PARAGRAPH, speller=NameSpeller(chat))

    assert (result.text, result.attempts, result.problems) == (GOOD, 2, ())
    spent_in, spent_out = spelling_tokens(fake)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (
        220 + spent_in,
        100 + spent_out,
    )
    first, second = fake.requests[2:]
    instruction = spelling_instruction({"Mara": MARA, "Tom Baker": TOM_BAKER})
    assert instruction in first.messages[0]["content"]
    assert instruction in second.messages[0]["content"]
    assert f"the name Mara is not written {MARA}" in second.messages[-1]["content"]


async def test_a_name_still_misspelt_after_the_retry_is_a_warning(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Delay(0.0), Delay(0.0), Reply(OTHER_SPELLING), Reply(OTHER_SPELLING))

    result = await translate_to_thai(chat, PARAGRAPH, speller=NameSpeller(chat))

    assert result.text == OTHER_SPELLING
    assert result.problems == (f"the name Mara is not written {MARA}",)
