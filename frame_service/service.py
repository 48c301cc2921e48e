"""The frames endpoint: fetch an upload, decode it, measure it, store its frames."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from nats.aio.client import Client
from nats.js.errors import ObjectNotFoundError
from PIL import Image

from bus import blobs
from bus.blobs import BlobStore
from bus.reporter import Reporter
from bus.server import Server
from contracts.messages import (
    ExtractFrames,
    FailureCode,
    Frame,
    FramesExtracted,
    Label,
    MediaKind,
    SceneFacts,
    Stage,
    VideoInfo,
)
from contracts.subjects import EXTRACT_FRAMES, FRAMES, INLINE_UPLOADS
from frame_service.animation import Timeline, extract_animation, read_timeline
from frame_service.cancellation import CancelToken
from frame_service.capture import Capture, read_capture
from frame_service.config import Settings
from frame_service.frames import MediaError, Picture, UnprocessableMedia, VideoMeta
from frame_service.images import prepare_image
from frame_service.perception import Facts, Perceiver
from frame_service.transcribe import Transcriber, Transcript
from frame_service.video import extract_video
from frame_service.workspace import request_dir, sweep_leftovers

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class UploadMissing(Exception):
    """The upload a request names is not in the blob store (expired, or never stored)."""


ERRORS = {
    MediaError: FailureCode.INVALID_MEDIA,
    UnprocessableMedia: FailureCode.UNPROCESSABLE,
    UploadMissing: FailureCode.INTERNAL,
    blobs.BlobsUnavailable: FailureCode.UPSTREAM_UNAVAILABLE,
}


# Calls a replica takes on per decoding slot: the others fetch or store meanwhile.
_CALLS_PER_SLOT = 4

# How long a cancelled call waits for its worker thread to reach its next check.
_STOP_GRACE = 5.0


class FrameExtractor:
    """Turns uploads into frames; perception and transcription are optional extras.

    Scene facts are measured only when a request asks for them (ExtractFrames.scene_facts)
    and a perceiver is loaded; a video's speech is transcribed alongside its frames.

    Photos and videos hold slots of their own (settings.photos_in_flight and
    videos_in_flight), so a photo never queues behind videos, and run their blocking
    work on a thread pool with a thread for every slot. When a call is cancelled (its
    deadline passed, or its caller sent Cancel) its worker thread is told to stop,
    and the call ends once the thread has.
    """

    def __init__(
        self,
        nc: Client,
        store: BlobStore,
        settings: Settings,
        perceiver: Perceiver | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.settings = settings
        self.perceiver = perceiver
        self.transcriber = transcriber
        # Whisper runs one clip at a time per process; frames keep flowing meanwhile.
        self._transcribing = threading.Lock()
        self._slots = {
            MediaKind.IMAGE: asyncio.Semaphore(settings.photos_in_flight),
            MediaKind.VIDEO: asyncio.Semaphore(settings.videos_in_flight),
        }
        # A video holds two threads: one decodes its frames, one transcribes its sound.
        self._threads = ThreadPoolExecutor(
            max_workers=settings.photos_in_flight + 2 * settings.videos_in_flight,
            thread_name_prefix="frames",
        )
        self.working = 0  # blocking jobs running on worker threads right now

    async def extract(self, request: ExtractFrames) -> FramesExtracted:
        return await self._extract(request, CancelToken())

    async def _extract(self, request: ExtractFrames, cancel: CancelToken) -> FramesExtracted:
        reporter = Reporter(self.nc, request.progress, request.request_id)
        # Who reads scene facts: only a text-only story model. A vision model sees the
        # frames, so for it perception (and the EXIF read) is work nobody reads.
        perceive = request.scene_facts and self.perceiver is not None
        with request_dir(self.settings.work_dir) as tmp:
            path = Path(tmp) / "upload"
            try:
                if request.data is not None:
                    # Sent inside the request; decoders read files, so it is written out.
                    path.write_bytes(request.data)
                else:
                    await blobs.fetch_to_file(self.store, request.upload, path)
            except ObjectNotFoundError as err:
                # nats-py's text is a repr of its error; the client gets a sentence.
                log.warning("upload %s is not in the blob store: %s", request.upload, err)
                raise UploadMissing("the upload is no longer stored; send it again") from err
            # The slot covers the CPU work only: fetching and storing are waits on the
            # bus, and other calls decode meanwhile (a 1080p photo: 7 ms of decoding in
            # 22 ms of call; 32 at once took 292 ms each with the slot held throughout).
            timeline = None
            if request.kind is MediaKind.IMAGE and request.max_frames > 1:
                # Several frames asked of a photo (it is the only one): an animated GIF
                # or WebP is told as a short video, and decoded in a video's slot.
                timeline = await self._blocking(cancel, read_timeline, path)
            async with self._slots[MediaKind.VIDEO if timeline else request.kind]:
                if request.kind is MediaKind.VIDEO:
                    pictures, video = await self._video(request, path, reporter, cancel)
                    capture = None
                elif timeline is not None:
                    meta, pictures = await self._moving(request, path, cancel, timeline)
                    video, capture = _video_info(meta, None), None
                else:
                    bounds = self.settings.bounds
                    picture = await self._blocking(cancel, prepare_image, path, bounds, cancel)
                    # Its time orders the photos whatever the model; the place is
                    # looked up only for scene facts.
                    capture = await self._blocking(cancel, read_capture, path, place=perceive)
                    pictures = [picture]
                    video = None
                if perceive:
                    facts = await self._blocking(cancel, self._describe, pictures, capture, cancel)
                else:
                    facts = [None] * len(pictures)
        taken_at = capture.taken_at if capture is not None else None
        if sum(len(p.jpeg) for p in pictures) <= request.inline_frames_bytes:
            frames = _inline(pictures, facts, taken_at)
        else:
            frames = await self._store(request.upload, pictures, facts, taken_at)
        log.info("request %s: %s -> %d frame(s)", request.request_id, request.kind, len(frames))
        return FramesExtracted(frames=frames, video=video)

    async def _video(
        self, request: ExtractFrames, path: Path, reporter: Reporter, cancel: CancelToken
    ) -> tuple[list[Picture], VideoInfo]:
        """The video's frames, and what is said in it, transcribed while the frames decode."""
        listening: asyncio.Task[Transcript | None] | None = None
        if self.transcriber is not None:
            # Vision models read the transcript too, so it is wanted whatever scene_facts
            # says; it runs beside the frames rather than after them.
            listening = asyncio.create_task(self._blocking(cancel, self._transcribe, path, cancel))
        try:
            meta, pictures = await self._moving(request, path, cancel)
            transcript = None
            if listening is not None:
                if meta.has_audio and not listening.done():
                    await reporter.stage(Stage.TRANSCRIBING, "Listening to what is said")
                transcript = await listening
        except BaseException:
            if listening is not None:
                # The frames failed or the call was cancelled: nobody will read the words.
                listening.cancel()
                await asyncio.gather(listening, return_exceptions=True)
            raise
        return pictures, _video_info(meta, transcript)

    async def _moving(
        self,
        request: ExtractFrames,
        path: Path,
        cancel: CancelToken,
        timeline: Timeline | None = None,
    ) -> tuple[VideoMeta, list[Picture]]:
        """A video's frames, or an animation's (given its timeline), in the video bounds and budget."""
        if timeline is None:
            extract = functools.partial(extract_video, path)
        else:
            extract = functools.partial(extract_animation, path, timeline)
        return await self._blocking(
            cancel,
            extract,
            request.max_frames,
            self.settings.video_bounds,
            budget=self.settings.video_budget,
            cancel=cancel,
        )

    async def _blocking(
        self, cancel: CancelToken, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run work on a worker thread; if this call is cancelled meanwhile, stop it there too.

        Cancelling the awaiting task does not stop a thread: cancel is set, the work
        raises Cancelled at its next check, and the call waits for that (up to
        _STOP_GRACE s) so its slot and work directory are released only once no
        thread uses them.
        """
        # The copied context carries the request id into the thread's log lines.
        call = functools.partial(contextvars.copy_context().run, work, *args, **kwargs)
        job = asyncio.get_running_loop().run_in_executor(self._threads, call)
        self.working += 1
        job.add_done_callback(self._job_done)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            cancel.cancel()
            finished, _ = await asyncio.wait({job}, timeout=_STOP_GRACE)
            if not finished:
                log.warning("a worker thread runs on %.0f s after its call ended", _STOP_GRACE)
            raise

    def _job_done(self, job: asyncio.Future[Any]) -> None:
        self.working -= 1
        if not job.cancelled():
            # Read, so asyncio does not log it: once a call is cancelled shield lets
            # go of the job, and the Cancelled it then ends with is expected.
            job.exception()

    def _describe(
        self, pictures: list[Picture], capture: Capture | None, cancel: CancelToken
    ) -> list[SceneFacts | None]:
        assert self.perceiver is not None  # _extract asks only when one is loaded
        described: list[SceneFacts | None] = []
        for picture in pictures:
            cancel.check()
            with Image.open(io.BytesIO(picture.jpeg)) as image:
                facts = self.perceiver.describe(image.convert("RGB"), cancel)
            described.append(_scene_facts(facts, capture))
        return described

    def _transcribe(self, path: Path, cancel: CancelToken) -> Transcript | None:
        assert self.transcriber is not None
        # Another video's clip may hold the model for a while: keep an eye on cancel.
        while not self._transcribing.acquire(timeout=0.25):
            cancel.check()
        try:
            return self.transcriber.transcribe(path, cancel)
        finally:
            self._transcribing.release()

    async def _store(
        self,
        upload: str,
        pictures: list[Picture],
        facts: list[SceneFacts | None],
        taken_at: str | None = None,
    ) -> list[Frame]:
        frames: list[Frame] = []
        try:
            for index, (picture, picture_facts) in enumerate(zip(pictures, facts, strict=True)):
                name = blobs.frame_name(upload, index)
                await blobs.put_bytes(self.store, name, picture.jpeg)
                frames.append(_frame(picture, picture_facts, taken_at, stored_as=name))
        except BaseException:
            # Nobody will learn these names if we fail: remove what was written.
            await blobs.delete_quietly(self.store, [f.object for f in frames])
            raise
        return frames


def _inline(
    pictures: list[Picture], facts: list[SceneFacts | None], taken_at: str | None = None
) -> list[Frame]:
    """Frames that travel in the reply itself, stored nowhere."""
    return [_frame(p, f, taken_at) for p, f in zip(pictures, facts, strict=True)]


def _frame(
    picture: Picture, facts: SceneFacts | None, taken_at: str | None, stored_as: str = ""
) -> Frame:
    """The Frame of a picture: stored under ``stored_as``, else carrying its bytes."""
    return Frame(
        object=stored_as,
        width=picture.width,
        height=picture.height,
        timestamp=picture.timestamp,
        facts=facts,
        jpeg=None if stored_as else picture.jpeg,
        taken_at=taken_at,
    )


def _scene_facts(facts: Facts, capture: Capture | None) -> SceneFacts:
    return SceneFacts(
        labels=[Label(name=label.name, confidence=label.confidence) for label in facts.labels],
        faces=facts.faces,
        people=facts.people_hint,
        colors=list(facts.colors),
        brightness=facts.brightness,
        light=facts.light,
        text=facts.text,
        taken_at=capture.taken_at if capture else None,
        place=capture.place if capture else None,
        camera=capture.camera if capture else None,
    )


def _video_info(meta: VideoMeta, transcript: Transcript | None) -> VideoInfo:
    return VideoInfo(
        duration=meta.duration,
        width=meta.width,
        height=meta.height,
        fps=meta.fps,
        has_audio=meta.has_audio,
        transcript=transcript.text if transcript else None,
        transcript_language=transcript.language if transcript else None,
    )


async def start_service(
    nc: Client,
    settings: Settings,
    perceiver: Perceiver | None = None,
    transcriber: Transcriber | None = None,
) -> Server:
    """Start the frames micro service on ``nc``; models load here, once, unless given.

    What an earlier, killed process left in the work directory is swept first.
    """
    await asyncio.to_thread(sweep_leftovers, settings.work_dir)
    if perceiver is None and settings.perception:
        perceiver = await asyncio.to_thread(Perceiver, ocr=settings.ocr)
    if transcriber is None and settings.transcribe:
        transcriber = await asyncio.to_thread(Transcriber)
    store = await blobs.open_bucket(blobs.jetstream(nc), settings.bucket)
    extractor = FrameExtractor(nc, store, settings, perceiver, transcriber)
    # Small uploads may come inside the request (ExtractFrames.data): say so.
    server = await Server.start(nc, FRAMES, metadata={INLINE_UPLOADS: "true"})
    # The extractor queues photos and videos apart for the CPU; the server must not queue
    # them together, and holds more calls than there are slots, so fetching and storing
    # overlap decoding.
    held = _CALLS_PER_SLOT * (settings.photos_in_flight + settings.videos_in_flight)
    await server.add(EXTRACT_FRAMES, extractor.extract, errors=ERRORS, max_in_flight=held)
    return server
