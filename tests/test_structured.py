"""A story and its alt text from one structured answer, the story streamed out of the JSON."""

from __future__ import annotations

import json
import random

import pytest

from contracts.messages import Usage
from devstack.fake_answers import Reply
from llm.chat import Completion
from llm.structured import FieldStream, structured
from story_service.told import told
from tests.media import write_jpeg

pytestmark = pytest.mark.usefixtures("blob_store")

STORY = 'The "Quiet" Harbour\n\nยายสมศรี smiled 😀 at C:\\boats\tand\u00a0gulls/ferns.'


def _streamed(raw: str, cuts: list[int]) -> str:
    heard: list[str] = []
    stream = FieldStream("story", heard.append)
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        stream.feed(raw[start:end])
    return "".join(heard)


@pytest.mark.parametrize("ascii_only", [True, False])
def test_the_story_field_is_decoded_however_the_answer_is_cut(ascii_only):
    raw = json.dumps({"alt_text": ["x"], "story": STORY, "after": "no"}, ensure_ascii=ascii_only)
    for cut in range(1, len(raw)):
        assert _streamed(raw, [cut]) == STORY, cut
    draw = random.Random(3)
    for _ in range(300):
        cuts = sorted(draw.sample(range(1, len(raw)), 4))
        assert _streamed(raw, cuts) == STORY, cuts


def test_an_answer_that_is_not_json_is_passed_on_as_it_is():
    assert _streamed("  The Harbour\n\nBoats.", [3, 9]) == "  The Harbour\n\nBoats."


def test_the_schema_takes_the_place_of_a_grammar():
    schema = {"type": "object"}
    asked = structured({"grammar": "root ::= x", "repeat_penalty": 1.1}, schema)
    assert asked is not None and "grammar" not in asked and asked["repeat_penalty"] == 1.1
    assert asked["response_format"]["json_schema"]["schema"] == schema
    assert structured({"grammar": "g"}, None) == {"grammar": "g"}


@pytest.mark.parametrize(
    ("text", "wanted", "story", "alt"),
    [
        (json.dumps({"story": "S", "alt_text": ["a  cat", "a dog"]}), 2, "S", ["a cat", "a dog"]),
        (json.dumps({"story": "S", "alt_text": ["a cat"]}), 2, "S", []),  # does not line up
        ("Plain story.", 1, "Plain story.", []),
        (json.dumps({"tale": "S"}), 1, json.dumps({"tale": "S"}), []),
    ],
)
def test_an_answer_is_told_as_a_story_and_alt_text(text, wanted, story, alt):
    answer = told(Completion(text=text, usage=Usage(), model="m"), wanted)
    assert (answer.text, answer.alt_text) == (story, alt)


def _photos(tmp_path, count: int):
    return [
        ("files", (f"p{i}.jpg", write_jpeg(tmp_path / f"p{i}.jpg").read_bytes(), "image/jpeg"))
        for i in range(count)
    ]


async def test_a_vision_model_writes_the_alt_text_in_the_storys_own_call(gateway, openai, tmp_path):
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=_photos(tmp_path, 2))
    assert response.status_code == 200
    events = [
        (block.split("\n")[0].removeprefix("event: "), block)
        for block in response.text.replace("\r\n", "\n").split("\n\n")
        if block.startswith("event:")
    ]
    streamed = "".join(
        json.loads(block.split("data: ", 1)[1])["text"] for name, block in events if name == "story"
    )
    result = json.loads(
        next(block for name, block in events if name == "result").split("data: ", 1)[1]
    )
    story_calls = [r for r in openai.requests if r.get("response_format")]
    assert len(story_calls) == 1  # one call: the story and the alt text together
    assert story_calls[0]["response_format"]["type"] == "json_schema"
    assert "2 sentences, one per photo in order" in story_calls[0].text
    # The story streamed and answered is the story, never the JSON around it.
    assert streamed.strip() == result["english"].strip() and "{" not in streamed
    assert result["english"].startswith("The Quiet Harbour")
    assert [alt["english"] for alt in result["alt_text"]] == [
        "Picture 1 shows boats tied up in a harbour at sunrise.",
        "Picture 2 shows boats tied up in a harbour at sunrise.",
    ]
    assert all(alt["thai"] for alt in result["alt_text"])


async def test_a_server_that_answers_plain_text_still_gives_the_story(gateway, openai, tmp_path):
    openai.script(Reply("The Porch\n\nPumpkin slept in the sun all afternoon."))
    async with gateway() as client:
        response = await client.post("/analyze/", files=_photos(tmp_path, 1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["english"].startswith("The Porch") and body["alt_text"] == []
