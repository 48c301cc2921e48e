"""What a job owns in the blob bucket, how long its media are kept, and the copies
another take of it makes."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from contracts.messages import CastMember, Frame, JobRecord, JobStatus, JobUpload, Length
from gateway.cleanup import JOBS_MEDIA_PREFIX


class MediaGone(Exception):
    """A job's media are no longer kept: there is no other take of it (410)."""


def media_name(job_id: str, index: int) -> str:
    """A job's stored upload: named under ``jobs/`` so per-request sweeps leave it alone."""
    return f"{JOBS_MEDIA_PREFIX}{job_id}/upload-{index}"


def stored_objects(record: JobRecord) -> list[str]:
    """The objects a job owns: its stored uploads and the frames it kept."""
    uploads = [upload.name for upload in record.uploads if upload.stored]
    return uploads + [frame.object for frame in record.frames if frame.object]


def media_kept(record: JobRecord, keep_media: float, now: float) -> bool:
    """Whether the job's uploads are still kept for another take: a kept job's, stored,
    while it runs and for ``keep_media`` seconds after it ended (not cancelled)."""
    if not record.keep or record.media_removed or record.status is JobStatus.CANCELED:
        return False
    if not all(upload.stored for upload in record.uploads):
        return False
    if not record.status.finished or record.finished_at is None:
        return True
    return record.finished_at + keep_media > now


@dataclass(frozen=True)
class Steering:
    """What another take of a job changes; None keeps the original's."""

    prompt: str | None = None  # "" asks for the default prompt
    length: Length | None = None
    cast: list[CastMember] | None = None


@dataclass(frozen=True)
class Retake:
    """The media of another take of a job: its uploads and kept frames, copied under the
    new job's names (so each job owns its own and deleting one leaves the other whole)."""

    uploads: list[JobUpload]
    frames: list[Frame]  # [] when the frames are to be made again
    copies: list[tuple[str, str]]  # (the source's object, the copy's)

    @classmethod
    def of(cls, source: JobRecord, job_id: str) -> Retake:
        uploads = [
            JobUpload(name=media_name(job_id, index), size=upload.size)
            for index, upload in enumerate(source.uploads)
        ]
        copies = [(u.name, c.name) for u, c in zip(source.uploads, uploads, strict=True)]
        # Frames are named after their upload: the copies after the copied uploads.
        old, new = f"{JOBS_MEDIA_PREFIX}{source.id}/", f"{JOBS_MEDIA_PREFIX}{job_id}/"
        frames = [
            msgspec.structs.replace(frame, object=new + frame.object.removeprefix(old))
            for frame in source.frames
            if frame.object.startswith(old)
        ]
        if len(frames) != len(source.frames):
            frames = []  # not all stored under its uploads: the frame stage runs again
        copies += [(f.object, c.object) for f, c in zip(source.frames, frames, strict=False)]
        return cls(uploads, frames, copies)
