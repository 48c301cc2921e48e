"""Service names, versions, subjects and the blob bucket: the only place they are spelled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec

from contracts import messages as m

Req = TypeVar("Req", bound=m.StageRequest)
Rep = TypeVar("Rep", bound=m.Message)


@dataclass(frozen=True)
class ServiceSpec:
    """A micro service's identity; replicas share the name and the queue group."""

    name: str
    version: str
    description: str

    @property
    def queue_group(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        """How a message to a person names it: "frames service"."""
        return self.name.removeprefix("imgstory-") + " service"


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One request/reply operation: where it listens and what it speaks.

    On the wire a reply is ``reply_type`` or ``Failure``; ``decode_reply`` reads either.
    """

    service: ServiceSpec
    name: str
    subject: str
    request_type: type[Req]
    reply_type: type[Rep]
    _requests: msgspec.msgpack.Decoder[Req] = field(init=False, repr=False, compare=False)
    _replies: msgspec.msgpack.Decoder[Rep | m.Failure] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Decoders are built once per endpoint, not per message.
        object.__setattr__(self, "_requests", msgspec.msgpack.Decoder(self.request_type))
        replies: msgspec.msgpack.Decoder[Rep | m.Failure] = msgspec.msgpack.Decoder(
            self.reply_type | m.Failure
        )
        object.__setattr__(self, "_replies", replies)

    def decode_request(self, data: bytes) -> Req:
        """Raises msgspec.DecodeError or msgspec.ValidationError."""
        return self._requests.decode(data)

    def decode_reply(self, data: bytes) -> Rep | m.Failure:
        """Raises msgspec.DecodeError or msgspec.ValidationError."""
        return self._replies.decode(data)


FRAMES = ServiceSpec("imgstory-frames", "1.0.0", "Turns photos and videos into model-ready frames")
STORY = ServiceSpec("imgstory-story", "1.0.0", "Writes an English story from frames")
TRANSLATION = ServiceSpec("imgstory-translation", "1.0.0", "Translates a story into Thai")

SERVICES = (FRAMES, STORY, TRANSLATION)

# Capabilities a story replica states in its micro metadata ($SRV.INFO), as "true"/"false".
# A replica whose model sees images needs no scene facts, so none are measured for it.
SEES_IMAGES = "sees_images"
# A frames replica that reads uploads sent inline (ExtractFrames.data), and a story
# replica that reads frames sent inline (Frame.jpeg): small media then skip the bucket.
INLINE_UPLOADS = "inline_uploads"
INLINE_FRAMES = "inline_frames"
# A translation replica whose model gains from translating paragraphs side by side while
# the story is written (a remote provider). A local model on the CPU does not: the calls
# queue on one engine and take cores from the story, so it gets the whole story at once.
BY_PARAGRAPH = "by_paragraph"

EXTRACT_FRAMES = Endpoint(
    FRAMES, "extract", "imgstory.v1.frames.extract", m.ExtractFrames, m.FramesExtracted
)
WRITE_STORY = Endpoint(STORY, "write", "imgstory.v1.story.write", m.WriteStory, m.StoryWritten)
TRANSLATE = Endpoint(
    TRANSLATION, "translate", "imgstory.v1.translation.translate", m.Translate, m.Translated
)

# JetStream Object Store bucket that carries uploads and frames between processes.
BLOB_BUCKET = "imgstory-blobs"


def progress_subject(request_id: str) -> str:
    """Where services publish Progress for one request (plain pub/sub, no reply)."""
    return f"imgstory.v1.progress.{request_id}"


def cancel_subject(request_id: str) -> str:
    """Where the gateway announces that a request is abandoned (every replica listens)."""
    return f"{CANCEL_PREFIX}.{request_id}"


CANCEL_PREFIX = "imgstory.v1.cancel"
CANCEL_ALL = f"{CANCEL_PREFIX}.*"


def ping_subject(service: ServiceSpec) -> str:
    """The micro discovery subject that any replica of ``service`` answers."""
    return f"$SRV.PING.{service.name}"


def info_subject(service: ServiceSpec) -> str:
    """The micro discovery subject where every replica of ``service`` lists its endpoints."""
    return f"$SRV.INFO.{service.name}"


# Durable jobs: each job's state is a KV entry, its work a message on a work-queue
# stream that every gateway's workers pull from, its events a stream of their own.
JOBS_BUCKET = "imgstory-jobs"
JOB_KEYS_BUCKET = "imgstory-job-keys"  # Idempotency-Key -> the job it made
JOBS_STREAM = "imgstory-jobs-work"
JOBS_WORK_PREFIX = "imgstory.v1.jobs.work"  # one subject per submitter: queued per key
JOBS_WORKERS = "workers"  # the work queue's one durable pull consumer, shared by all
JOB_EVENTS_STREAM = "imgstory-job-events"
JOB_EVENTS_PREFIX = "imgstory.v1.jobs.events"
JOB_CANCEL_PREFIX = "imgstory.v1.jobs.cancel"
# An unkept job's events, told only to whoever listens as they happen (its synchronous
# caller): outside the events stream's subjects, so nothing is stored.
JOB_LIVE_PREFIX = "imgstory.v1.jobs.live"
# Webhook deliveries: a work queue of their own, retried with backoff by negative acks.
WEBHOOKS_STREAM = "imgstory-webhooks"
WEBHOOKS_SUBJECT = "imgstory.v1.jobs.webhooks"
WEBHOOKS_SENDERS = "senders"


def job_work_subject(submitter: str) -> str:
    """Where a submitter's jobs wait: the stream counts each submitter's queue apart."""
    return f"{JOBS_WORK_PREFIX}.{submitter}"


def job_events_subject(job_id: str) -> str:
    """Where one job's events are stored, in order."""
    return f"{JOB_EVENTS_PREFIX}.{job_id}"


def job_live_subject(job_id: str) -> str:
    """Where an unkept job's events are told to its caller, not stored."""
    return f"{JOB_LIVE_PREFIX}.{job_id}"


def job_cancel_subject(job_id: str) -> str:
    """Where a job's cancellation is announced to the replica running it."""
    return f"{JOB_CANCEL_PREFIX}.{job_id}"
