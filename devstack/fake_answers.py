"""What the fake OpenAI provider is sent and answers: the steps a test scripts, the requests
it records, and its default responder with its token rule."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# Tokens the fake charges for each image part, whatever its size (OpenAI's "low" detail price).
IMAGE_TOKENS = 85

THAI_ANSWER = (
    "แสงสุดท้ายของวัน\n\n"
    "ยามเย็นที่ริมแม่น้ำ แสงสีทองค่อย ๆ ลับขอบฟ้า เด็กหญิงคนหนึ่งนั่งมองเรือลำเล็กแล่นผ่านไปอย่างช้า ๆ "
    "เธอยิ้มให้กับลมเย็นที่พัดมาเบา ๆ และรู้สึกว่าโลกทั้งใบกำลังหยุดนิ่งเพื่อเธอ\n\n"
    "เมื่อดวงดาวดวงแรกปรากฏขึ้น เธอกระซิบความฝันของตัวเองให้สายน้ำฟัง แล้วเดินกลับบ้านพร้อมหัวใจที่อบอุ่น"
)


@dataclass(frozen=True)
class Reply:
    """Answer with `text` (None sends a null content). Token counts default to the fake's counting rule."""

    text: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    usage: bool = True
    refusal: str | None = None
    pace: float = 0.0  # seconds between the pieces of a streamed answer (a slow writer)


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error. `body` None sends an OpenAI-style {"error": {...}} body."""

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class Raw:
    """Answer with exactly these bytes (str is UTF-8 encoded), for malformed or unusual servers."""

    body: str | bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before answering with `then` (None: the default responder)."""

    seconds: float
    then: Reply | Status | Raw | None = None


Step = Reply | Status | Raw | Delay


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received. Indexing it (`req["messages"]`) reads the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default) if isinstance(self.body, dict) else default

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.get("messages") or [])

    @property
    def image_urls(self) -> list[str]:
        """The image URLs of every image part, in order."""
        return [
            part["image_url"]["url"]
            for part in _parts(self.messages)
            if part.get("type") == "image_url"
        ]

    @property
    def text(self) -> str:
        """All text of all messages, joined by newlines."""
        return "\n".join(_texts(self.messages))


def _parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            parts.extend(part for part in content if isinstance(part, dict))
    return parts


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    return [str(part.get("text", "")) for part in _parts(messages) if part.get("type") == "text"]


def _system_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_texts([m for m in messages if m.get("role") in ("system", "developer")]))


def wants_thai(messages: list[dict[str, Any]]) -> bool:
    """The default responder's rule: a system message that mentions both "Thai" and translating."""
    system = _system_text(messages).lower()
    return "thai" in system and "translat" in system


_THAI_BLOCKS = THAI_ANSWER.split("\n\n")


def thai_answer(messages: list[dict[str, Any]]) -> str:
    """The default translation: a Thai block for every block of the text between the
    last <story> tags (a short one gets the title), so a story translated whole comes
    back as THAI_ANSWER and one translated a paragraph at a time as its paragraphs."""
    text = "\n".join(_texts(messages))
    english = text.rpartition("<story>")[2].partition("</story>")[0]
    blocks = [b for b in re.split(r"\n\s*\n", english.strip()) if b.strip()] or [""]
    if len(blocks) == len(_THAI_BLOCKS):
        return THAI_ANSWER
    thai = []
    for block in blocks:
        words = len(block.split())
        thai.append(_THAI_BLOCKS[0] if words <= 8 else _THAI_BLOCKS[1 + words % 2])
    return "\n\n".join(thai)


# The Thai spellings the default responder gives the names it is asked to spell
# (translation_service.names); any other name gets no Thai spelling.
NAME_SPELLINGS = {"Mara": "มารา", "Tom": "ทอม", "Tom Baker": "ทอม เบเกอร์"}


def wants_spelling(messages: list[dict[str, Any]]) -> bool:
    """The default responder's rule: a system message that asks to transliterate a name."""
    return "transliterate" in _system_text(messages).lower()


def default_answer(
    messages: list[dict[str, Any]], response_format: dict[str, Any] | None = None
) -> str:
    """What the fake says when no step is scripted: a name's Thai spelling when asked for
    one, Thai for translations, else an English story; asked for JSON (structured
    output), the story and a sentence of alt text per picture as a JSON object."""
    if wants_spelling(messages):
        name = _texts(messages)[-1].strip()
        return NAME_SPELLINGS.get(name, f"{name} has no Thai spelling here.")
    if wants_thai(messages):
        return thai_answer(messages)
    images = sum(1 for part in _parts(messages) if part.get("type") == "image_url")
    noun = "picture" if images == 1 else "pictures"
    story = (
        "The Quiet Harbour\n\n"
        f"This is a story about {images} {noun}. Morning light spilled over the harbour as "
        "Mara tied the last rope, and the gulls argued over the fishing boats.\n\n"
        "By evening the sea had turned to copper, and she walked home smiling."
    )
    if not response_format or response_format.get("type") != "json_schema":
        return story
    video = "for the whole video" in "\n".join(_texts(messages))
    alt = [
        f"Picture {i} shows boats tied up in a harbour at sunrise." for i in range(1, images + 1)
    ]
    answer = {"story": story, "alt_text": alt[:1] if video else alt}
    return json.dumps(answer, ensure_ascii=False)


@dataclass(frozen=True)
class ReceivedImage:
    """One image part the fake received: its model and detail, and what its data URL held.

    `width` and `height` are None for a URL that is not a decodable base64 image.
    """

    model: str
    detail: str | None
    bytes: int
    width: int | None
    height: int | None


def received_images(request: RecordedRequest) -> list[ReceivedImage]:
    """The images of one chat request, sized from their headers (nothing is decoded)."""
    model = str(request.get("model") or "")
    images = []
    for part in _parts(request.messages):
        if part.get("type") != "image_url":
            continue
        image_url = part.get("image_url")
        image_url = image_url if isinstance(image_url, dict) else {}
        url = str(image_url.get("url") or "")
        data = b""
        size: tuple[int, int] | None = None
        if url.startswith("data:") and ";base64," in url:
            try:
                data = base64.b64decode(url.partition(";base64,")[2], validate=True)
                # Image.open reads the header only; the pixels stay undecoded.
                with Image.open(io.BytesIO(data)) as img:
                    size = img.size
            except (ValueError, OSError, Image.DecompressionBombError):
                # Not base64 (binascii.Error is a ValueError) or not an image Pillow reads.
                size = None
        images.append(
            ReceivedImage(
                model=model,
                detail=image_url.get("detail"),
                bytes=len(data),
                width=size[0] if size else None,
                height=size[1] if size else None,
            )
        )
    return images


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The fake's token rule for input: whitespace-separated words of all text, plus IMAGE_TOKENS per image."""
    words = sum(len(text.split()) for text in _texts(messages))
    images = sum(1 for part in _parts(messages) if part.get("type") == "image_url")
    return words + IMAGE_TOKENS * images


def count_completion_tokens(text: str | None) -> int:
    """The fake's token rule for output: whitespace-separated words of the answer."""
    return len((text or "").split())
