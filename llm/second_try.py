"""Ask, judge, try once more, keep the better answer: how the story and the translation
services get a usable answer from a model that sometimes writes garbage."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from contracts.messages import Usage
from llm.chat import Completion

Verdict = TypeVar("Verdict")


@dataclass(frozen=True)
class Attempt(Generic[Verdict]):
    """One answer and what its judge made of it."""

    completion: Completion
    verdict: Verdict


@dataclass(frozen=True)
class Outcome(Generic[Verdict]):
    """The first attempt, the second if there was one, and the one kept."""

    first: Attempt[Verdict]
    second: Attempt[Verdict] | None
    kept: Attempt[Verdict]
    # The first failed and a second could not have finished before the deadline.
    out_of_time: bool = False

    @property
    def usage(self) -> Usage:
        """The tokens every attempt cost, kept or not."""
        spent = self.first.completion.usage
        return spent if self.second is None else spent + self.second.completion.usage

    @property
    def model(self) -> str:
        """The model that answered last."""
        return (self.second or self.first).completion.model

    @property
    def attempts(self) -> int:
        return 1 if self.second is None else 2


def room_for_another(deadline: float | None, took: float) -> bool:
    """Whether a call like one that took `took` seconds can still finish before
    `deadline` (a `time.time()` instant; None: no deadline)."""
    return deadline is None or time.time() + took < deadline


async def second_try(
    ask: Callable[[], Awaitable[Completion]],
    judge: Callable[[Completion], Verdict],
    passes: Callable[[Verdict], bool],
    ask_again: Callable[[Attempt[Verdict]], Awaitable[Completion]],
    second_is_better: Callable[[Verdict, Verdict], bool],
    *,
    deadline: float | None = None,
) -> Outcome[Verdict]:
    """Ask once; when the answer's verdict does not pass, ask again (``ask_again`` hears
    the failed attempt, to say what was wrong) and keep the second answer when
    ``second_is_better(second, first)``, else the first.

    With a `deadline` (a `time.time()` instant) there is no second call that could not
    finish in time (one as long as the first): the first is kept, ``out_of_time`` set.
    The model's errors propagate unchanged.
    """
    started = time.monotonic()
    first = Attempt(completion := await ask(), judge(completion))
    if passes(first.verdict):
        return Outcome(first, None, first)
    if not room_for_another(deadline, time.monotonic() - started):
        return Outcome(first, None, first, out_of_time=True)
    second = Attempt(completion := await ask_again(first), judge(completion))
    kept = second if second_is_better(second.verdict, first.verdict) else first
    return Outcome(first, second, kept)
