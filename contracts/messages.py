"""Every message that crosses NATS, as msgspec Structs, grouped by service.

Schema evolution follows msgspec's advice: new fields get defaults, a field never
changes type, and unknown fields are ignored so old readers skip new ones.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Message(msgspec.Struct, kw_only=True, frozen=True, tag=True):
    """Base of every top-level message; the class name travels as the ``type`` tag."""


class Part(msgspec.Struct, kw_only=True, frozen=True):
    """Base of values nested inside messages (no tag needed)."""


# --- the error envelope -------------------------------------------------------------


class FailureCode(StrEnum):
    """Why a request failed; the gateway maps each code to one HTTP status."""

    INVALID_MEDIA = "invalid_media"  # 400: not a supported or decodable file
    UNPROCESSABLE = "unprocessable"  # 422: valid input with nothing usable in it
    RATE_LIMITED = "rate_limited"  # 429: the model provider said slow down
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # 503: the model provider is down or refuses us
    INTERNAL = "internal"  # 500: our bug

    @property
    def status(self) -> int:
        """The HTTP status this code means, for the gateway and for micro's error header."""
        return _STATUS[self]


_STATUS = {
    FailureCode.INVALID_MEDIA: 400,
    FailureCode.UNPROCESSABLE: 422,
    FailureCode.RATE_LIMITED: 429,
    FailureCode.UPSTREAM_UNAVAILABLE: 503,
    FailureCode.INTERNAL: 500,
}


class Failure(Message):
    """The one error reply every endpoint may send instead of its result."""

    code: FailureCode
    detail: str
    retry_after: float | None = None


class Usage(Part):
    """Tokens one model call (or several, summed) consumed."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


# --- frame_service ------------------------------------------------------------------


class MediaKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class Label(Part):
    name: str
    confidence: float


class SceneFacts(Part):
    """What perception measured in one picture, each fact with its uncertainty.

    Text-only models write from these; ``place`` comes from GPS and never leaves the
    machine (remote models are not told it).
    """

    labels: list[Label] = []  # ImageNet top-k, most confident first
    faces: int | None = None  # None: not measured
    people: bool = False
    colors: list[str] = []
    brightness: float | None = None  # 0..1
    light: str | None = None
    text: str | None = None  # OCR, when an engine is installed and found text
    taken_at: str | None = None  # EXIF capture time, ISO 8601
    place: str | None = None  # nearest town to the EXIF GPS position
    camera: str | None = None


class Frame(Part):
    """One model-ready JPEG in the blob store."""

    object: str
    width: int
    height: int
    timestamp: float | None = None  # seconds into the video; None for photos
    facts: SceneFacts | None = None


class VideoInfo(Part):
    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
    transcript: str | None = None  # what is said, when transcription is on and found speech
    transcript_language: str | None = None


class ExtractFrames(Message):
    """Turn one stored upload into frames. The upload stays owned by the caller."""

    request_id: str
    upload: str  # object name in the blob store
    kind: MediaKind
    max_frames: int = 8
    progress: str | None = None  # subject for Progress events, if the caller listens


class FramesExtracted(Message):
    frames: list[Frame]
    video: VideoInfo | None = None


ExtractFramesReply = FramesExtracted | Failure


# --- story_service ------------------------------------------------------------------


class WriteStory(Message):
    request_id: str
    frames: list[Frame]
    prompt: str | None = None
    video: VideoInfo | None = None
    progress: str | None = None  # subject for Progress events (story text as it is written)


class StoryWritten(Message):
    text: str
    usage: Usage
    model: str


WriteStoryReply = StoryWritten | Failure


# --- translation_service ------------------------------------------------------------


class Translate(Message):
    request_id: str
    text: str
    target_language: str = "th"


class Translated(Message):
    text: str
    usage: Usage
    model: str


TranslateReply = Translated | Failure


# --- progress (published, not requested) ---------------------------------------------


class Stage(StrEnum):
    UPLOADING = "uploading"
    EXTRACTING_FRAMES = "extracting_frames"
    TRANSCRIBING = "transcribing"
    WRITING_STORY = "writing_story"
    TRANSLATING = "translating"


class Progress(Message):
    """A service's news about a request: a stage it entered, or new story text."""

    request_id: str
    stage: Stage
    detail: str = ""
    text: str | None = None  # a piece of the story, in order
