"""Service names, versions, subjects and the blob bucket: the only place they are spelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from contracts import messages as m

Req = TypeVar("Req", bound=m.Message)


@dataclass(frozen=True)
class ServiceSpec:
    """A micro service's identity; replicas share the name and the queue group."""

    name: str
    version: str
    description: str

    @property
    def queue_group(self) -> str:
        return self.name


@dataclass(frozen=True)
class Endpoint(Generic[Req]):
    """One request/reply operation: where it listens and what it speaks."""

    service: ServiceSpec
    name: str
    subject: str
    request_type: type[Req]
    reply_type: Any  # a Union of the result Struct and Failure


FRAMES = ServiceSpec("imgstory-frames", "1.0.0", "Turns photos and videos into model-ready frames")
STORY = ServiceSpec("imgstory-story", "1.0.0", "Writes an English story from frames")
TRANSLATION = ServiceSpec("imgstory-translation", "1.0.0", "Translates a story into Thai")

SERVICES = (FRAMES, STORY, TRANSLATION)

EXTRACT_FRAMES = Endpoint(
    FRAMES, "extract", "imgstory.v1.frames.extract", m.ExtractFrames, m.ExtractFramesReply
)
WRITE_STORY = Endpoint(STORY, "write", "imgstory.v1.story.write", m.WriteStory, m.WriteStoryReply)
TRANSLATE = Endpoint(
    TRANSLATION, "translate", "imgstory.v1.translation.translate", m.Translate, m.TranslateReply
)

# JetStream Object Store bucket that carries uploads and frames between processes.
BLOB_BUCKET = "imgstory-blobs"


def progress_subject(request_id: str) -> str:
    """Where services publish Progress for one request (plain pub/sub, no reply)."""
    return f"imgstory.v1.progress.{request_id}"


def ping_subject(service: ServiceSpec) -> str:
    """The micro discovery subject that any replica of ``service`` answers."""
    return f"$SRV.PING.{service.name}"
