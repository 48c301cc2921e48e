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
    """Tokens one model call (or several, summed) consumed: the one type token counts
    are kept and added up in, from a backend's answer to the gateway's response."""

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


class StageRequest(Message, frozen=True, kw_only=True):
    """What every stage request carries besides its own fields (never sent on its own).

    ``deadline`` (UNIX time) is when the caller stops waiting: the serving replica
    abandons the work then. While a replica holds the call it publishes ``Alive``
    beats naming ``call_id`` on ``heartbeat``; silence tells the caller the replica
    is gone, and it sends the call again (with a new ``call_id``).
    """

    request_id: str
    progress: str | None = None  # subject for Progress news, if the caller listens
    heartbeat: str | None = None  # subject for Alive beats, if the caller watches
    call_id: str = ""
    deadline: float | None = None


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
    """One model-ready JPEG: in the blob store under ``object``, or, when the caller
    asked for small frames inline, its bytes in ``jpeg`` (and ``object`` empty)."""

    object: str
    width: int
    height: int
    timestamp: float | None = None  # seconds into the video; None for photos
    facts: SceneFacts | None = None
    jpeg: bytes | None = None
    # A photo's capture time from its metadata (ISO 8601), whether or not scene facts
    # were asked for: the gateway tells photos in the order they were taken by it.
    taken_at: str | None = None


class VideoInfo(Part, frozen=True):
    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
    transcript: str | None = None  # what is said, when transcription is on and found speech
    transcript_language: str | None = None


class ExtractFrames(StageRequest, frozen=True, kw_only=True, tag="ExtractFrames"):
    """Turn one stored upload into frames. The upload stays owned by the caller."""

    upload: str  # object name in the blob store; also names the frames when it is inline
    kind: MediaKind
    max_frames: int = 8
    # A small upload travels in the message itself and is not stored (``upload`` then
    # names no object); sent only to replicas that state INLINE_UPLOADS.
    data: bytes | None = None
    # The reply's frames may come back inline (Frame.jpeg) rather than stored when they
    # total at most this many bytes; 0: stored. Set only when every story replica states
    # INLINE_FRAMES, and small enough that the story request stays within NATS's limit.
    inline_frames_bytes: int = 0
    # Measure SceneFacts (labels, faces, OCR, capture) for each frame. Only a text-only
    # story model reads them; a vision model sees the frames themselves.
    scene_facts: bool = True


class FramesExtracted(Message, frozen=True, tag="FramesExtracted"):
    frames: list[Frame]
    video: VideoInfo | None = None


# --- story_service ------------------------------------------------------------------


class Length(StrEnum):
    """How long a story the person asked for; the story service turns it into words and a
    token cap (a small local model keeps its own, shorter limits)."""

    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


class CastMember(Part, frozen=True):
    """Someone or something in the pictures, named by the person: "Pumpkin: the orange
    cat". Data for the story, never instructions to the model."""

    name: str  # in any script; used as given
    who: str  # how to recognise them in the pictures


class WriteStory(StageRequest, frozen=True, kw_only=True, tag="WriteStory"):
    """Write the English story; with ``progress`` set, its text is published as written.

    With ``paragraphs`` set too, each finished paragraph is also published as a
    ``Paragraph``, so the caller can translate it while the rest is being written; a
    caller that shows nobody the text as it grows clears ``stream_text`` and hears only
    the paragraphs.
    """

    frames: list[Frame]
    prompt: str | None = None
    video: VideoInfo | None = None
    paragraphs: bool = False
    stream_text: bool = True
    # The photos are in the order they were taken (each frame's ``taken_at``), not the
    # order they were uploaded: the model is told so, and the time between them.
    by_capture: bool = False
    length: Length | None = None  # None: the service's default (medium)
    cast: list[CastMember] = []


class StoryWritten(Message, frozen=True, tag="StoryWritten"):
    text: str
    usage: Usage
    model: str
    # Whether the model saw the pictures themselves, or wrote from the scene facts
    # measured in them (a text-only model); None: a replica too old to say.
    saw_pictures: bool | None = None
    # What the reader should know about how the story was written, in plain words (a
    # long story the local model wrote shorter); [] when nothing.
    warnings: list[str] = []
    # A plain sentence of what each picture shows, in story order (one for a video), for
    # screen readers; [] when the replica wrote none.
    alt_text: list[str] = []


# --- translation_service ------------------------------------------------------------


class TranslationContext(Part, frozen=True):
    """What comes before the text being translated, so names and tone stay consistent
    when a story is translated a paragraph at a time."""

    title: str | None = None  # the story's title (English)
    before: list[str] = []  # the English paragraphs before this one, in order
    translated: list[str] = []  # translations already made of earlier paragraphs, in order


class Translate(StageRequest, frozen=True, kw_only=True, tag="Translate"):
    text: str
    target_language: str = "th"
    context: TranslationContext | None = None
    # The names the person gave the story's cast: each is spelt one way throughout the
    # Thai, and one already in Thai script is kept exactly as given.
    names: list[str] = []


class Translated(Message, frozen=True, tag="Translated"):
    text: str
    usage: Usage
    model: str
    # Why the Thai may not match its English (fewer paragraphs, a number or a colour
    # lost...), in plain words, when a second translation did not fix it; [] when the
    # checks passed.
    warnings: list[str] = []


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
    # A piece of text, in order: of the story (stage writing_story) or of its
    # translation (stage translating; the gateway's own news, never on the wire).
    text: str | None = None


class Paragraph(Message, frozen=True, tag="Paragraph"):
    """One finished paragraph of the story (``index`` from 0, counted as
    ``contracts.text.split_paragraphs`` counts them; the title is a paragraph), published
    while the rest is still being written. The reply's text is the authority: a caller
    checks the paragraphs it heard against it."""

    request_id: str
    index: int
    text: str


class Alive(Message, frozen=True, tag="Alive"):
    """A replica still holds ``call_id`` (queued or working); sent about once a second."""

    request_id: str
    call_id: str


class Cancel(Message, frozen=True, tag="Cancel"):
    """Nobody waits for ``request_id`` any more: every replica drops its calls for it."""

    request_id: str
    reason: str = ""


# --- jobs (durable work: a record in the jobs KV bucket, a RunJob on the work queue) ---


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class JobError(Part, frozen=True):
    """Why a job failed: the HTTP status and detail the synchronous call would answer."""

    status: int
    detail: str
    retry_after: float | None = None  # seconds, when the provider said when to come back


class JobUpload(Part, frozen=True):
    """One uploaded file of a job: a blob-bucket object, or (in RunJob only) its bytes.

    A small upload rides in the work message, which the work queue keeps until the job
    is done; the record names it with ``stored`` False and never carries the bytes.
    """

    name: str
    size: int
    stored: bool = True
    data: bytes | None = None


class WebhookStatus(StrEnum):
    PENDING = "pending"  # not yet delivered; being tried
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: a 4xx that is not 408/429, or out of time


class WebhookState(Part, frozen=True):
    """How the delivery of a job's webhook goes (shown on the job)."""

    id: str  # the webhook-id header: the same on every try of one delivery
    status: WebhookStatus = WebhookStatus.PENDING
    attempts: int = 0
    last_status: int | None = None  # the receiver's last HTTP status
    last_error: str | None = None  # why the last try failed, in plain words
    delivered_at: float | None = None


class JobRecord(Message, frozen=True, tag="JobRecord"):
    """A job's whole state, one KV entry, changed only by compare-and-set.

    Times are UNIX seconds. ``result`` is the JSON of the synchronous answer, kept as
    bytes so the wire does not depend on the gateway's response schema.
    """

    id: str
    status: JobStatus
    created_at: float
    expires_at: float
    kind: MediaKind
    uploads: list[JobUpload]
    owner: str | None = None  # the API key's id when keys are on
    prompt: str | None = None
    length: Length | None = None
    cast: list[CastMember] = []
    stage: Stage | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    worker: str | None = None  # the replica running it (a gateway's client name)
    result: bytes | None = None
    error: JobError | None = None
    # False: removed once its synchronous caller has the answer. Such a job's events are
    # told to that caller alone, as they happen, and not stored; its stage is not kept.
    keep: bool = True
    watched: bool = False  # its caller follows the story as it is written (/analyze/stream)
    request_id: str | None = None  # the X-Request-ID of the submission, which the result names
    webhook_url: str | None = None  # told when the job ends (succeeded, failed, canceled)
    idempotency_key: str | None = None  # the job-keys entry naming this job, if any
    # The submission's trace context (W3C traceparent): the run's spans are its children.
    trace: dict[str, str] = {}
    webhook: WebhookState | None = None
    # A kept job's frames, stored under its uploads' names, once its frame stage is done:
    # another take of it (``again_of``) reads them instead of paying for that stage again.
    frames: list[Frame] = []
    video: VideoInfo | None = None
    # Its uploads and frames are gone (kept for another take for a while after it ended).
    media_removed: bool = False
    again_of: str | None = None  # the job whose media this one was told from again


class RunJob(Message, frozen=True, tag="RunJob"):
    """The work-queue message: run job ``job_id`` (its state is in the KV bucket)."""

    job_id: str
    uploads: list[JobUpload] = []  # the record's, with the bytes of those not stored


class DeliverWebhook(Message, frozen=True, tag="DeliverWebhook"):
    """The webhook queue's message: tell job ``job_id``'s webhook that it ended."""

    job_id: str


class JobEvent(Message, frozen=True, tag="JobEvent"):
    """One event of a job, as its Server-Sent Events stream names it; ``data`` is JSON."""

    name: str
    data: bytes
