"""Faithful Thai, or say so: the checks, the retry on its own, and the warnings users see."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from contracts.messages import Translate, Translated, TranslationContext, Usage
from devstack.fake_answers import Reply, count_completion_tokens, count_prompt_tokens
from devstack.fake_openai import FakeOpenAI
from gateway.thai import StoryTranslation
from llm import OpenAIChat
from tests.media import sample_photo
from tests.support.fixtures import ClientFactory
from translation_service.faithful import (
    MAX_LENGTH_RATIO,
    MIN_LENGTH_RATIO,
    length_ratio,
    missing_colours,
    missing_numbers,
    problems,
    translator_notes,
)
from translation_service.translate import RETRY_TEMPERATURE, translate_to_thai

# Good translations of story paragraphs, written by hand: the pairs the length band was
# measured on (translation_service/faithful.py). Names, numbers and colours included.
GOOD_PAIRS = [
    (
        "Mara tied the last rope while old Tom Baker watched from the pier.",
        "มาร่าผูกเชือกเส้นสุดท้าย ขณะที่ทอม เบเกอร์ผู้เฒ่าเฝ้ามองจากท่าเรือ",
    ),
    (
        "By evening the sea had turned to copper, and Mara walked home with Tom.",
        "พอตกเย็น ทะเลก็กลายเป็นสีทองแดง และมาร่าก็เดินกลับบ้านพร้อมกับทอม",
    ),
    (
        "The grey light of the morning crept through the kitchen window, where a cat slept "
        "on a red chair.",
        "แสงสีเทาของยามเช้าค่อย ๆ ลอดผ่านหน้าต่างห้องครัว ที่ซึ่งแมวตัวหนึ่งนอนหลับอยู่บนเก้าอี้สีแดง",
    ),
    (
        "In 1998, the little café on Rue Cler served 40 cups of espresso before eight o'clock.",
        "ในปี 1998 ร้านกาแฟเล็ก ๆ บนถนนรูแคลร์เสิร์ฟเอสเพรสโซ 40 ถ้วยก่อนแปดโมงเช้า",
    ),
    (
        "The Blue Door\n\nAnna found a blue door at the end of the alley. Behind it, someone "
        "was singing an old song about the river.",
        "ประตูสีฟ้า\n\nแอนนาพบประตูสีฟ้าบานหนึ่งที่ปลายซอย หลังประตูนั้นมีใครบางคนกำลังร้องเพลงเก่าเกี่ยวกับแม่น้ำ",
    ),
    (
        "The astronaut floated above the Earth, her white suit catching the sun. Below her, "
        "the oceans were a deep, endless blue, and the clouds drifted like slow thoughts.",
        "นักบินอวกาศลอยอยู่เหนือโลก ชุดสีขาวของเธอสะท้อนแสงอาทิตย์ เบื้องล่างเธอ "
        "มหาสมุทรเป็นสีน้ำเงินเข้มที่ไม่มีที่สิ้นสุด และก้อนเมฆลอยผ่านไปราวกับความคิดที่เชื่องช้า",
    ),
    (
        "At 7:30 the train left the station, and Luis pressed his face to the cold glass, "
        "watching the green fields run past.",
        "เวลา 7:30 รถไฟออกจากสถานี หลุยส์แนบหน้ากับกระจกที่เย็นเฉียบ มองดูทุ่งนาสีเขียวที่วิ่งผ่านไป",
    ),
    (
        "Nobody in the village remembered who had planted the old tree, but everyone agreed "
        "it had always been there, watching over them like a patient grandmother.",
        "ไม่มีใครในหมู่บ้านจำได้ว่าใครเป็นคนปลูกต้นไม้เก่าแก่ต้นนั้น "
        "แต่ทุกคนต่างเห็นพ้องกันว่ามันอยู่ที่นั่นมาตลอด คอยเฝ้ามองพวกเขาราวกับคุณยายผู้อดทน",
    ),
    (
        "The motorcycle was yellow and loud, and Kenji loved it more than anything he owned.",
        "รถมอเตอร์ไซค์คันนั้นสีเหลืองและเสียงดัง และเคนจิก็รักมันมากกว่าสิ่งใดที่เขามี",
    ),
    (
        "She poured the coffee slowly, letting the steam rise between them. Neither of them "
        "spoke; the silence said enough.",
        "เธอรินกาแฟอย่างช้า ๆ ปล่อยให้ไอร้อนลอยขึ้นระหว่างพวกเขาทั้งสอง ไม่มีใครพูดอะไร ความเงียบบอกทุกอย่างได้ดีพอแล้ว",
    ),
    (
        "When the rain stopped, the street shone like black glass, and the neon signs "
        "painted it pink and orange.",
        "เมื่อฝนหยุด ถนนก็เป็นประกายราวกับกระจกสีดำ และป้ายไฟนีออนก็แต้มมันด้วยสีชมพูและสีส้ม",
    ),
    (
        "Grandfather counted 12 boats in the harbour that morning, two more than the day before.",
        "เช้าวันนั้นคุณตานับเรือในท่าเรือได้ 12 ลำ มากกว่าเมื่อวานสองลำ",
    ),
    (
        "Night Market\n\nThe smell of grilled pork and lemongrass drifted over the stalls, and "
        "Somchai shouted prices to anyone who would listen.",
        "ตลาดกลางคืน\n\nกลิ่นหมูย่างและตะไคร้ลอยฟุ้งไปทั่วแผงขายของ และสมชายก็ตะโกนบอกราคาให้ทุกคนที่ยอมฟัง",
    ),
    (
        "The Quiet Harbour\n\nMara tied the last rope.\n\nBy evening the sea had turned to copper.",
        "ท่าเรือที่เงียบสงบ\n\nมาร่าผูกเชือกเส้นสุดท้าย\n\nพอตกเย็น ทะเลก็กลายเป็นสีทองแดง",
    ),
]

LAMP = (
    "The Grey Lamp\n\nIn 1998 a grey lamp burned in the window of the old shop, and nobody "
    "knew who lit it each night."
)
LAMP_THAI = "โคมไฟสีเทา\n\nในปี 1998 โคมไฟสีเทาดวงหนึ่งส่องสว่างอยู่ที่หน้าต่างของร้านเก่า และไม่มีใครรู้ว่าใครจุดมันทุกคืน"
# The local model's kind of failure: the year gone and the grey lamp turned blue.
LAMP_BLUE = "โคมไฟสีฟ้า\n\nโคมไฟสีฟ้าดวงหนึ่งส่องสว่างอยู่ที่หน้าต่างของร้านเก่า และไม่มีใครรู้ว่าใครจุดมันทุกคืน"
# ... and the title and paragraph run together on one line.
LAMP_ONE_LINE = "โคมไฟสีเทา ในปี 1998 โคมไฟสีเทาดวงหนึ่งส่องสว่างอยู่ที่หน้าต่างของร้านเก่า"


@pytest.mark.parametrize(("english", "thai"), GOOD_PAIRS)
def test_good_translations_pass_every_check(english: str, thai: str) -> None:
    assert problems(english, thai) == []


def test_the_length_band_holds_the_measured_good_pairs_with_room_either_side() -> None:
    ratios = [r for e, t in GOOD_PAIRS if (r := length_ratio(e, t)) is not None]
    assert len(ratios) == len(GOOD_PAIRS)
    assert min(ratios) > 0.6 and max(ratios) < 0.95  # measured: 0.63 to 0.91
    assert min(ratios) / 2 >= MIN_LENGTH_RATIO and max(ratios) * 2 >= MAX_LENGTH_RATIO


@pytest.mark.parametrize(
    ("english", "thai", "expected"),
    [
        # A four-paragraph story came back as one line.
        (
            "One.\n\nTwo.\n\nThree.\n\nFour.",
            "หนึ่ง สอง สาม สี่",
            ["it has 1 paragraph where the English has 4"],
        ),
        (LAMP, LAMP_ONE_LINE, ["it has 1 paragraph where the English has 2"]),
        # Half the story lost.
        (
            GOOD_PAIRS[5][0],
            "นักบินอวกาศลอยอยู่เหนือโลก",
            ["it is much shorter than the English", "the colours white, blue are missing"],
        ),
        # A loop, or notes after the translation.
        (
            GOOD_PAIRS[1][0],
            GOOD_PAIRS[1][1] + " " + "ทะเลก็กลายเป็นสีทองแดง " * 6,
            ["it is much longer than the English"],
        ),
        (GOOD_PAIRS[3][0], GOOD_PAIRS[3][1].replace("1998", ""), ["the number 1998 is missing"]),
        (
            GOOD_PAIRS[3][0],
            "ร้านกาแฟเล็ก ๆ บนถนนรูแคลร์เสิร์ฟเอสเพรสโซหลายถ้วยก่อนแปดโมงเช้าในปีนั้นทุกวัน",
            ["the numbers 1998, 40 are missing"],
        ),
        # A grey light became a blue one.
        (GOOD_PAIRS[2][0], GOOD_PAIRS[2][1].replace("เทา", "ฟ้า"), ["the colour grey is missing"]),
        (LAMP, LAMP_BLUE, ["the number 1998 is missing", "the colour grey is missing"]),
        # Recorded from the local model on its engine: a translator's preamble before the
        # Thai, and a retry's correction ("your answer does not match...") translated in.
        (
            GOOD_PAIRS[1][0],
            "ข้อความที่คุณต้องการแปลงเป็นภาษาไทย\n\n" + GOOD_PAIRS[1][1],
            ["it talks about the translation instead of only translating"],
        ),
        (
            GOOD_PAIRS[2][0],
            "ด้วยคำตอบของคุณไม่ตรงกับภาษาอียิปต์: สีขาว, แดง และสีเหลืองไม่มี. " + GOOD_PAIRS[2][1],
            ["it talks about the translation instead of only translating"],
        ),
    ],
)
def test_bad_translations_are_caught_with_the_reason(
    english: str, thai: str, expected: list[str]
) -> None:
    assert problems(english, thai) == expected


@pytest.mark.parametrize(
    ("english", "thai"),
    [
        ("In 1998 it rained.", "ในปี ๑๙๙๘ ฝนตก"),  # Thai digits
        ("It cost 1,000 baht.", "ราคา 1000 บาท"),  # with or without the thousands comma
        ("It cost 1000 baht.", "ราคา ๑,๐๐๐ บาท"),
        ("She had 3 cats.", "เธอมีแมวสามตัว"),  # a single digit may be written as a word
    ],
)
def test_numbers_may_be_written_in_either_digits(english: str, thai: str) -> None:
    assert missing_numbers(english, thai) == []


@pytest.mark.parametrize(
    "english",
    [
        "Mr Brown waved.",  # a name, not a colour
        "The grey-haired man waved.",  # ผมหงอก: no เทา in a good translation
        "Red sky at night.",  # a capitalised word is not taken for a colour
    ],
)
def test_colour_words_that_are_not_colours_are_left_alone(english: str) -> None:
    assert missing_colours(english, "ชายคนนั้นโบกมือ") == []


def test_strange_and_converted_are_not_translated() -> None:
    english = "The old machine turned the strange sand into glass."
    thai = "เครื่องจักรเก่าทำการแปลงทรายแปลกประหลาดให้กลายเป็นแก้ว"
    assert translator_notes(english, thai) == []
    assert translator_notes(english, "การแปลของเครื่อง") == ["การแปล"]


def test_a_story_about_languages_may_name_them_in_thai() -> None:
    english = "She answered him in Thai, then translated the menu into English for her friend."
    thai = "เธอตอบเขาเป็นภาษาไทย แล้วแปลเมนูเป็นภาษาอังกฤษให้เพื่อนของเธอฟัง"
    assert problems(english, thai) == []


def test_short_text_has_no_length_ratio() -> None:
    assert length_ratio("The end.", "จบ") is None
    assert problems("The end.", "จบ") == []


# --- translate_to_thai through the fake OpenAI server --------------------------------


@pytest.fixture
def chat(make_client: ClientFactory) -> OpenAIChat:
    return OpenAIChat(make_client(), "gpt-test-faithful")


CONTEXT = TranslationContext(
    title="The Grey Lamp", before=["An earlier paragraph."], translated=["ย่อหน้าก่อนหน้า"]
)


async def test_an_unfaithful_answer_is_translated_again_on_its_own(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(
        Reply(LAMP_BLUE, prompt_tokens=100, completion_tokens=50),
        Reply(LAMP_THAI, prompt_tokens=80, completion_tokens=60),
    )

    result = await translate_to_thai(chat, LAMP, context=CONTEXT)

    assert (result.text, result.attempts, result.problems) == (LAMP_THAI, 2, ())
    assert (result.usage.input_tokens, result.usage.output_tokens) == (180, 110)
    first, second = fake.requests
    assert "<context>" in first.text
    # On its own: no earlier paragraphs this time, told what was wrong.
    assert "<context>" not in second.text and "ย่อหน้าก่อนหน้า" not in second.text
    assert second.messages[-2] == {"role": "assistant", "content": LAMP_BLUE}
    correction = second.messages[-1]["content"]
    assert "the number 1998 is missing; the colour grey is missing" in correction


async def test_a_small_model_is_asked_again_as_before_at_a_temperature_not_told_why(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply(LAMP_BLUE), Reply(LAMP_THAI))

    result = await translate_to_thai(chat, LAMP, explain_retry=False)

    assert (result.text, result.attempts, result.problems) == (LAMP_THAI, 2, ())
    first, second = fake.requests
    # No correction for it to translate into its answer: the same request, sampled warmer.
    assert second.messages == first.messages
    assert (first["temperature"], second["temperature"]) == (0.0, RETRY_TEMPERATURE)


async def test_two_unfaithful_answers_keep_the_thai_with_its_problems(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply(LAMP_BLUE), Reply(LAMP_ONE_LINE))

    result = await translate_to_thai(chat, LAMP)

    # The second is no worse (one problem against two), so it is kept.
    assert (result.text, result.attempts) == (LAMP_ONE_LINE, 2)
    assert result.problems == ("it has 1 paragraph where the English has 2",)
    assert len(fake.requests) == 2


async def test_no_second_translation_when_it_could_not_finish_in_time(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.latency = 0.3
    fake.script(Reply(LAMP_BLUE), Reply(LAMP_THAI))

    # The first answer takes 0.3 s of the 0.5 s left: one as long would come too late.
    result = await translate_to_thai(chat, LAMP, deadline=time.time() + 0.5)

    assert (result.text, result.attempts) == (LAMP_BLUE, 1)
    assert result.problems == ("the number 1998 is missing", "the colour grey is missing")
    assert fake.pending == 1


async def test_a_second_translation_that_fits_the_deadline_is_made(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply(LAMP_BLUE), Reply(LAMP_THAI))

    result = await translate_to_thai(chat, LAMP, deadline=time.time() + 60)

    assert (result.text, result.attempts, result.problems) == (LAMP_THAI, 2, ())


async def test_a_retry_that_is_not_thai_keeps_the_first_thai_answer(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply(LAMP_BLUE), Reply("The Grey Lamp. In 1998 a grey lamp burned."))

    result = await translate_to_thai(chat, LAMP)

    assert (result.text, result.attempts) == (LAMP_BLUE, 2)
    assert result.problems == ("the number 1998 is missing", "the colour grey is missing")


async def test_a_non_thai_answer_then_an_unfaithful_one_is_not_tried_a_third_time(
    fake: FakeOpenAI, chat: OpenAIChat
) -> None:
    fake.script(Reply("In English."), Reply(LAMP_BLUE))

    result = await translate_to_thai(chat, LAMP)

    assert (result.text, result.attempts, len(result.problems)) == (LAMP_BLUE, 2, 2)
    assert len(fake.requests) == 2


# --- the gateway: which part, in words -----------------------------------------------


@pytest.mark.parametrize(
    ("story", "expected"),
    [
        (
            "Title\n\nFirst.\n\nSecond.",
            "Paragraph 2 of the Thai may not match the English: the colour grey is missing.",
        ),
        (
            "First.\n\nSecond.",
            "Paragraph 2 of the Thai may not match the English: the colour grey is missing.",
        ),
        (
            "Title\n\nSecond.",
            "The title and first paragraph of the Thai may not match the English: "
            "the colour grey is missing.",
        ),
    ],
)
async def test_the_gateway_names_the_part_of_the_thai_in_doubt(story: str, expected: str) -> None:
    async def translate(request: Translate) -> Translated:
        doubtful = request.text.endswith("Second.")
        warnings = ["the colour grey is missing"] if doubtful else []
        return Translated(text="ไทย", usage=Usage(1, 1), model="m", warnings=warnings)

    thai = StoryTranslation(translate, "r-faithful")
    assert thai.warnings == []
    await thai.finish(story)
    assert thai.warnings == [expected]
    await thai.close()


# --- POST /analyze/ end to end ---------------------------------------------------------


def files_of(path: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (path.name, path.read_bytes(), "application/octet-stream"))]


@pytest.mark.usefixtures("blob_store")
async def test_a_bad_translation_is_retried_and_the_good_one_used_without_warning(
    gateway, openai
) -> None:
    openai.script(Reply(LAMP), Reply(LAMP_BLUE), Reply(LAMP_THAI))
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["thai"], body["warnings"]) == (LAMP_THAI, [])
    assert len(openai.requests) == 3  # the story, the translation and its retry


@pytest.mark.usefixtures("blob_store")
async def test_two_bad_translations_give_thai_with_a_warning(gateway, openai) -> None:
    openai.script(Reply(LAMP), Reply(LAMP_BLUE), Reply(LAMP_BLUE))
    async with gateway() as client:
        response = await client.post("/analyze/", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["thai"] == LAMP_BLUE
    assert body["warnings"] == [
        "The title and first paragraph of the Thai may not match the English: "
        "the number 1998 is missing; the colour grey is missing."
    ]
    # Both attempts are paid for.
    _, *translations = openai.requests
    assert len(translations) == 2
    assert body["usage_by_stage"]["translation"] == {
        "input_tokens": sum(count_prompt_tokens(t.messages) for t in translations),
        "output_tokens": 2 * count_completion_tokens(LAMP_BLUE),
        "total_tokens": sum(count_prompt_tokens(t.messages) for t in translations)
        + 2 * count_completion_tokens(LAMP_BLUE),
    }


@pytest.mark.usefixtures("blob_store")
async def test_the_stream_result_carries_the_warnings(gateway, openai) -> None:
    openai.script(Reply(LAMP), Reply(LAMP_BLUE), Reply(LAMP_BLUE))
    async with gateway() as client:
        response = await client.post("/analyze/stream", files=files_of(sample_photo("coffee.png")))
    assert response.status_code == 200
    blocks = response.text.replace("\r\n", "\n").split("\n\n")
    results = [b for b in blocks if b.startswith("event: result")]
    assert len(results) == 1
    data = json.loads(results[0].split("data: ", 1)[1])
    assert len(data["warnings"]) == 1 and "1998" in data["warnings"][0]
