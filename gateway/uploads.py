"""Streams a multipart upload to temp files, typing each file by its magic bytes.

Limits are enforced while the body streams in, so no more than the limit of any one
file is ever written, and nothing but small form fields is held in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from contracts.media import HEAD_BYTES, sniff
from contracts.messages import CastMember, Length, MediaKind
from gateway.config import Limits

if TYPE_CHECKING:  # a TypedDict the library declares for type checkers only
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger(__name__)

FILES_FIELD = "files"
PROMPT_FIELD = "prompt"
KEEP_FIELD = "keep"  # /analyze/: keep the job it runs as
_SNIFF_BYTES = HEAD_BYTES
_MAX_OTHER_FIELD_BYTES = 8 * 1024
# What the photos and videos people have are, told by their first bytes (contracts.media).
SUPPORTED = (
    "JPG, PNG, HEIC, HEIF, AVIF, WebP or GIF images, or one MP4, MOV, M4V, WebM or MKV video"
)
UPLOAD_PREFIX = "imgstory-upload-"  # every upload's temp file starts so (see cleanup)


class UploadError(Exception):
    """The upload breaks a rule; the message is safe to show the client (HTTP 400)."""


class SlowUpload(Exception):
    """The body stalled or took too long to arrive (HTTP 408); the message is for the client."""


def megabytes(n: int) -> str:
    """A byte count as the limits are stated to users, e.g. '10 MB'."""
    return f"{n / (1024 * 1024):g} MB"


@dataclass
class ReceivedFile:
    path: Path
    filename: str
    kind: MediaKind | None = None
    size: int = 0


@dataclass
class ReceivedForm:
    """The files (on disk) and prompt of one upload. ``discard()`` removes the files."""

    files: list[ReceivedFile] = field(default_factory=list)
    prompt: str | None = None
    # The extra text fields asked for, as sent (blank space kept: a field's rules are on
    # the text as sent, as the OpenAPI document states them).
    fields: dict[str, str] = field(default_factory=dict)
    # How the story is steered (gateway.steering reads them from ``fields``).
    length: Length | None = None
    cast: list[CastMember] = field(default_factory=list)

    @property
    def kind(self) -> MediaKind:
        """The kind of every file in a received form (``receive_form`` checks they agree)."""
        kind = self.files[0].kind if self.files else None
        if kind is None:
            raise RuntimeError("the form has not been received yet")
        return kind

    def discard(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)


class _FormSink:
    """Parser callbacks: routes each part to a temp file or a small in-memory buffer."""

    def __init__(
        self, limits: Limits, directory: str | None, extra_fields: Collection[str] = ()
    ) -> None:
        self.limits = limits
        self.directory = directory
        self.extra_fields = frozenset(extra_fields)
        self._extra: dict[str, bytearray] = {}
        self.form = ReceivedForm()
        self._prompt = bytearray()
        self._prompt_seen = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._file: ReceivedFile | None = None
        self._handle: BinaryIO | None = None
        self._head = bytearray()
        self._other = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_data(self._header_field, d[s:e]),
            "on_header_value": lambda d, s, e: self._header_data(self._header_value, d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers.clear()
        self._name = None

    def _header_data(self, buffer: bytearray, data: bytes) -> None:
        buffer.extend(data)
        if len(buffer) > _MAX_OTHER_FIELD_BYTES:
            raise UploadError("a multipart part header is too long")

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == PROMPT_FIELD:
            if self._prompt_seen:
                raise UploadError("send at most one 'prompt' field")
            self._prompt_seen = True
        if self._name in self.extra_fields:
            self._extra.setdefault(self._name, bytearray())  # sent, even if empty
        if self._name != FILES_FIELD:
            return
        images = sum(1 for f in self.form.files if f.kind is MediaKind.IMAGE)
        if images >= self.limits.max_images:
            raise UploadError(
                f"too many files: at most {self.limits.max_images} images per request"
            )
        filename = options.get(b"filename", b"").decode("utf-8", "replace") or "upload"
        fd, path = tempfile.mkstemp(prefix=UPLOAD_PREFIX, dir=self.directory)
        self._file = ReceivedFile(path=Path(path), filename=filename)
        self.form.files.append(self._file)
        self._handle = os.fdopen(fd, "wb")
        self._head.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self._file_data(chunk)
        elif self._name == PROMPT_FIELD:
            self._prompt.extend(chunk)
            # UTF-8 takes at most 4 bytes a character: stop reading well before memory matters.
            if len(self._prompt) > 4 * self.limits.max_prompt_chars:
                raise UploadError(self._prompt_too_long())
        elif self._name in self.extra_fields:
            value = self._extra.setdefault(self._name, bytearray())
            value.extend(chunk)
            if len(value) > _MAX_OTHER_FIELD_BYTES:
                raise UploadError(f"'{self._name}' is too long")
        else:
            self._other += len(chunk)
            if self._other > _MAX_OTHER_FIELD_BYTES:
                names = [f"'{n}'" for n in (FILES_FIELD, PROMPT_FIELD, *sorted(self.extra_fields))]
                allowed = ", ".join(names[:-1]) + " and " + names[-1]
                raise UploadError(f"unexpected form fields: send only {allowed}")

    def _file_data(self, chunk: bytes) -> None:
        f = self._file
        assert f is not None and self._handle is not None
        if f.kind is None:
            self._head.extend(chunk)
            if len(self._head) < _SNIFF_BYTES:
                return
            self._classify(bytes(self._head))
            chunk, self._head = bytes(self._head), bytearray()
        self._write(chunk)

    def _classify(self, head: bytes) -> None:
        f = self._file
        assert f is not None
        kind = sniff(head)
        if kind is None:
            raise UploadError(f"unsupported file type for '{f.filename}': send {SUPPORTED}")
        f.kind = kind
        kinds = {other.kind for other in self.form.files if other.kind is not None}
        videos = sum(1 for other in self.form.files if other.kind is MediaKind.VIDEO)
        if len(kinds) > 1 or videos > 1:
            raise UploadError(f"send either images or a single video, not both: {SUPPORTED}")

    def _write(self, chunk: bytes) -> None:
        f = self._file
        assert f is not None and self._handle is not None
        limit = (
            self.limits.max_video_bytes
            if f.kind is MediaKind.VIDEO
            else self.limits.max_image_bytes
        )
        if f.size + len(chunk) > limit:
            raise UploadError(
                f"'{f.filename}' is too large: the limit is {megabytes(limit)} "
                f"for {'a video' if f.kind is MediaKind.VIDEO else 'each image'}"
            )
        # Page-cache writes of one network chunk are short; no thread hop per chunk.
        self._handle.write(chunk)
        f.size += len(chunk)

    def _part_end(self) -> None:
        if self._file is None:
            return
        f = self._file
        if self._head:  # a file shorter than the sniff window
            self._classify(bytes(self._head))
            self._write(bytes(self._head))
            self._head.clear()
        self._close_file()
        if f.size == 0:
            raise UploadError(f"'{f.filename}' is empty")

    def _close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._file = None

    def _prompt_too_long(self) -> str:
        return f"prompt is too long: at most {self.limits.max_prompt_chars} characters"

    def finish(self) -> ReceivedForm:
        if self._file is not None:
            raise UploadError("the upload ended in the middle of a file")
        if not self.form.files:
            raise UploadError("no files uploaded: send one or more 'files' fields")
        if self._prompt:
            try:
                prompt = self._prompt.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UploadError("prompt is not valid UTF-8 text") from err
            # The limit is on the text as sent (the OpenAPI maxLength), blanks included.
            if len(prompt) > self.limits.max_prompt_chars:
                raise UploadError(self._prompt_too_long())
            self.form.prompt = prompt.strip() or None
        for name, raw in self._extra.items():
            try:
                self.form.fields[name] = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UploadError(f"'{name}' is not valid UTF-8 text") from err
        return self.form

    def abort(self) -> None:
        self._close_file()
        self.form.discard()


async def receive_form(
    content_type: str | None,
    body: AsyncIterator[bytes],
    limits: Limits,
    directory: str | None = None,
    extra_fields: Collection[str] = (),
) -> ReceivedForm:
    """Read a multipart/form-data body into temp files and a prompt.

    Raises UploadError on any rule the body breaks and SlowUpload when it arrives too
    slowly (see Limits), leaving no temp file behind either way.
    """
    mime, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UploadError("send the request as multipart/form-data with a 'files' field")
    sink = _FormSink(limits, directory, extra_fields)
    try:
        parser = MultipartParser(boundary, sink.callbacks())
        async with aclosing(_in_time(body, limits)) as chunks:
            async for chunk in chunks:
                parser.write(chunk)
        parser.finalize()
        return sink.finish()
    except FormParserError as err:
        # The parser's own words name its internals (limits, offsets): ours do not.
        sink.abort()
        raise UploadError("the multipart body is malformed") from err
    except BaseException:
        # Client disconnects and cancellations must not leave temp files behind either.
        sink.abort()
        raise


async def _in_time(body: AsyncIterator[bytes], limits: Limits) -> AsyncGenerator[bytes, None]:
    """The body's chunks; SlowUpload when one is late or the whole body is.

    A gap longer than ``upload_idle_seconds`` is a stalled client; the whole-body
    deadline catches one that trickles a byte every few seconds and never stalls.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.upload_seconds
    chunks = aiter(body)
    while True:
        whole_body_left = deadline - loop.time()
        try:
            async with asyncio.timeout(min(limits.upload_idle_seconds, whole_body_left)):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if whole_body_left <= limits.upload_idle_seconds:
                raise SlowUpload(
                    f"the upload took longer than {limits.upload_seconds:g} seconds: "
                    "try a faster connection or smaller files"
                ) from None
            raise SlowUpload(
                f"the upload stalled: no data for {limits.upload_idle_seconds:g} seconds"
            ) from None
        yield chunk
