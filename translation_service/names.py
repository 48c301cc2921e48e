"""Names written the same way in every paragraph of a story translated a paragraph at a time.

A small local model translates each paragraph on its own (shown the earlier ones, it
translates them into its answer), so nothing ties "Mara" in one paragraph to "Mara" in
the next, and it may spell her มารา in one and มาร่า in the other. Each name is therefore
spelt once, by a short call of its own at temperature 0, and kept: every paragraph's
prompt gives that spelling, and a paragraph whose Thai lacks it fails the faithfulness
check (and is translated again, or carries a warning).

Greedy decoding of the same short prompt gives the same spelling on every replica, and
each replica keeps what it spelt, so a name costs one call per replica.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contracts.messages import Usage
from contracts.text import mentions, story_names
from llm.chat import ChatModel

log = logging.getLogger(__name__)

SPELL_PROMPT = """\
Write the English name the user gives in Thai letters, the way a Thai writer would \
transliterate it. Answer with the Thai spelling only."""
# A name of a few words takes a few tokens a syllable; a model that goes on is cut here.
SPELLING_TOKENS = 24
_KEEP = 4096  # names kept per replica, the least recently used dropped first
_NOT_THAI = re.compile(r"[^\u0E01-\u0E3A\u0E40-\u0E4E ]")
_NATIONALITY = re.compile(r"^(?:ภาษา|ชาว)\s*(?=\S)")  # "the language of", "the people of"


def _squeezed(thai: str) -> str:
    # Thai writes words without spaces between them: "โอลด์ ทอม" and "โอลด์ทอม" are one name.
    return "".join(thai.split())


def misspelt_names(english: str, thai: str, spellings: Mapping[str, str]) -> list[str]:
    """The names of `english` (its own, and any other in `spellings` it mentions, as
    the cast's) with a spelling in `spellings` that `thai` does not hold."""
    held = _squeezed(thai)
    named = dict.fromkeys([*story_names(english), *(n for n in spellings if mentions(english, n))])
    return [name for name in named if name in spellings and _squeezed(spellings[name]) not in held]


def spelling_instruction(spellings: Mapping[str, str]) -> str:
    """The prompt line that gives each name its Thai spelling ('' when there is none)."""
    if not spellings:
        return ""
    pairs = "; ".join(f"{name} = {thai}" for name, thai in spellings.items())
    return f"Write these names exactly so: {pairs}."


def _spelling(answer: str) -> str | None:
    line = answer.strip().splitlines()[0] if answer.strip() else ""
    # Quotes, full stops and the like go; a name with anything but Thai letters left is no spelling.
    kept = " ".join(re.sub(r"[\"“”‘’'.,!?:;()\[\]]", "", line).split())
    # Asked for "Egyptian" (a capitalised word, not only names are), the model answered
    # ภาษาอียิปต์, "the Egyptian language"; a story's Egyptian cat is แมวอียิปต์.
    kept = _NATIONALITY.sub("", kept)
    if not kept or _NOT_THAI.search(kept):
        return None
    return kept


@dataclass(frozen=True)
class Spelt:
    """Thai spellings of the names asked for, and the tokens this call spent on them."""

    spellings: dict[str, str]
    usage: Usage = field(default_factory=Usage)


class NameSpeller:
    """Spells names in Thai with `chat`, a short greedy call each, and keeps the spellings.

    A name being spelt for one paragraph is not spelt again for another: the second
    waits for the first call, which runs to its end even if the paragraph that started it
    is cancelled (it is a few tokens, and the next paragraph needs it).
    """

    def __init__(self, chat: ChatModel, *, keep: int = _KEEP) -> None:
        self._chat = chat
        self._keep = keep
        self._known: OrderedDict[str, asyncio.Task[tuple[str | None, Usage]]] = OrderedDict()

    async def spell(self, names: Iterable[str]) -> Spelt:
        """The spellings of `names` (a name the model could not spell in Thai letters is
        left out), with the tokens of the calls this one started.

        Raises the model's llm.errors.ModelError subclasses.
        """
        started: list[asyncio.Task[tuple[str | None, Usage]]] = []
        waits: dict[str, asyncio.Task[tuple[str | None, Usage]]] = {}
        for name in dict.fromkeys(names):
            task = self._known.get(name)
            if task is None or (task.done() and (task.cancelled() or task.exception())):
                task = asyncio.create_task(self._ask(name))
                started.append(task)
                self._known[name] = task
                while len(self._known) > self._keep:
                    self._known.popitem(last=False)
            self._known.move_to_end(name)
            waits[name] = task
        results = {name: await asyncio.shield(task) for name, task in waits.items()}
        return Spelt(
            spellings={name: thai for name, (thai, _) in results.items() if thai},
            usage=sum((task.result()[1] for task in started), Usage()),
        )

    async def _ask(self, name: str) -> tuple[str | None, Usage]:
        answer = await self._chat.complete(
            [
                {"role": "system", "content": SPELL_PROMPT},
                {"role": "user", "content": name},
            ],
            max_tokens=SPELLING_TOKENS,
            temperature=0.0,
            script="thai",
            max_paragraphs=1,
        )
        spelling = _spelling(answer.text)
        if spelling is None:
            log.info("the model gave no Thai spelling for a name: it is not checked")
        return spelling, answer.usage
