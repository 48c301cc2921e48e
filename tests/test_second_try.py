"""The second try the story and the translation services share: ask, judge, ask once
more, keep the better answer, count every token."""

from __future__ import annotations

import time

from contracts.messages import Usage
from llm.chat import Completion
from llm.second_try import Attempt, Outcome, second_try


class Answers:
    """Model calls that return the given texts in turn, recording what was retried."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.retried: list[str] = []

    async def ask(self) -> Completion:
        text = self.texts.pop(0)
        return Completion(text=text, usage=Usage(10, len(text)), model=f"m-{text}")

    async def again(self, first: Attempt[int]) -> Completion:
        self.retried.append(first.completion.text)
        return await self.ask()


async def tried(answers: Answers, deadline: float | None = None) -> Outcome[int]:
    return await second_try(
        answers.ask,
        lambda answer: len(answer.text),  # the verdict: how long the answer is
        lambda length: length >= 5,  # long enough passes
        answers.again,
        lambda second, first: second > first,
        deadline=deadline,
    )


async def test_an_answer_that_passes_is_asked_for_once() -> None:
    answers = Answers("good story", "never asked")
    outcome = await tried(answers)
    assert (outcome.kept.completion.text, outcome.attempts, answers.retried) == (
        "good story",
        1,
        [],
    )
    assert outcome.usage == Usage(10, 10) and outcome.model == "m-good story"


async def test_a_failed_answer_is_asked_again_and_the_better_kept() -> None:
    answers = Answers("bad", "ok")
    outcome = await tried(answers)
    assert answers.retried == ["bad"]
    assert outcome.kept is outcome.first  # "ok" is shorter: not better
    assert outcome.usage == Usage(20, 5) and outcome.model == "m-ok"
    assert outcome.attempts == 2 and not outcome.out_of_time

    better = await tried(Answers("bad", "better"))
    assert better.kept is better.second


async def test_no_second_call_that_could_not_finish_in_time() -> None:
    answers = Answers("bad", "never asked")
    outcome = await tried(answers, deadline=time.time() - 1)
    assert outcome.out_of_time and outcome.kept is outcome.first and answers.retried == []
    assert outcome.usage == Usage(10, 3)
