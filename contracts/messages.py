"""Every message that crosses NATS, as msgspec Structs, grouped by service.

Schema evolution follows msgspec's advice: new fields get defaults, a field never
changes type, and unknown fields are ignored so old readers skip new ones.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Message(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    """Base of every top-level message. Each states its ``type`` tag explicitly (the
    class names of version 1.0.0, so the wire is unchanged), so renaming a class never
    breaks the wire between replicas of different versions."""


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


class Failure(Message, frozen=True, tag="Failure"):
    """The one error reply every endpoint may send instead of its result."""

    code: FailureCode
    detail: str
    retry_after: float | None = None


class Usage(Part, frozen=True):
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


class Label(Part, frozen=True):
    name: str
    confidence: float


class SceneFacts(Part, frozen=True):
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


class Frame(Part, frozen=True):
    """One model-ready JPEG in the blob store."""

    object: str
    width: int
    height: int
    timestamp: float | None = None  # seconds into the video; None for photos
    facts: SceneFacts | None = None


class VideoInfo(Part, frozen=True):
    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
    transcript: str | None = None  # what is said, when transcription is on and found speech
    transcript_language: str | None = None


class ExtractFrames(Message, frozen=True, tag="ExtractFrames"):
    """Turn one stored upload into frames. The upload stays owned by the caller."""

    request_id: str
    upload: str  # object name in the blob store
    kind: MediaKind
    max_frames: int = 8
    progress: str | None = None  # subject for Progress events, if the caller listens


class FramesExtracted(Message, frozen=True, tag="FramesExtracted"):
    frames: list[Frame]
    video: VideoInfo | None = None


# --- story_service ------------------------------------------------------------------


class WriteStory(Message, frozen=True, tag="WriteStory"):
    request_id: str
    frames: list[Frame]
    prompt: str | None = None
    video: VideoInfo | None = None
    progress: str | None = None  # subject for Progress events (story text as it is written)


class StoryWritten(Message, frozen=True, tag="StoryWritten"):
    text: str
    usage: Usage
    model: str


# --- translation_service ------------------------------------------------------------


class Translate(Message, frozen=True, tag="Translate"):
    request_id: str
    text: str
    target_language: str = "th"


class Translated(Message, frozen=True, tag="Translated"):
    text: str
    usage: Usage
    model: str


# --- progress (published, not requested) ---------------------------------------------


class Stage(StrEnum):
    UPLOADING = "uploading"
    EXTRACTING_FRAMES = "extracting_frames"
    TRANSCRIBING = "transcribing"
    WRITING_STORY = "writing_story"
    TRANSLATING = "translating"


class Progress(Message, frozen=True, tag="Progress"):
    """A service's news about a request: a stage it entered, or new story text."""

    request_id: str
    stage: Stage
    detail: str = ""
    text: str | None = None  # a piece of the story, in order
