"""Videos to pictures: PyAV reads the container, decodes a few candidate frames and keeps the best."""

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image, ImageChops, ImageStat

from frame_service.cancellation import CancelToken
from frame_service.frame_choice import frame_times, pick_scene_frames
from frame_service.frames import (
    DecodeBudget,
    FrameBounds,
    MediaError,
    Picture,
    UnprocessableMedia,
    VideoMeta,
)
from frame_service.images import to_picture

log = logging.getLogger(__name__)

# Box types that can start an ISO base media file (MP4, MOV, 3GP).
_ISO_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

_CANDIDATES_PER_FRAME = 3
_MAX_CANDIDATES = 48
_SIGNATURE_SIZE = 16


@dataclass
class DecodeStats:
    """Counters for the work one extract_video call did, so callers and tests can see its cost."""

    candidates: int = 0
    seeks: int = 0
    frames_decoded: int = 0
    decode_errors: int = 0
    keyframes_only: bool = False  # the candidates were keyframes, each decoded alone


class _Meter:
    """One video's decoding, counted against its budget; every step checks for cancellation."""

    def __init__(self, budget: DecodeBudget, cancel: CancelToken, stats: DecodeStats) -> None:
        self.budget = budget
        self.cancel = cancel
        self.stats = stats
        self._ends = time.monotonic() + budget.seconds

    def step(self) -> None:
        """Raise Cancelled when cancelled, UnprocessableMedia once the time budget is spent."""
        self.cancel.check()
        if time.monotonic() > self._ends:
            raise UnprocessableMedia(
                f"decoding the video takes more than the {self.budget.seconds:g} s allowed; "
                "send a shorter or smaller video, or one with a keyframe every few seconds"
            )

    def decoded(self) -> None:
        """Count one decoded frame; raise UnprocessableMedia past the frame budget."""
        self.stats.frames_decoded += 1
        if self.stats.frames_decoded > self.budget.frames:
            raise self._too_many(f"more than {self.budget.frames}")
        self.step()

    def plan(self, frames: int | None) -> None:
        """Refuse before decoding when the index says the chosen frames cost too many."""
        if frames is not None and frames > self.budget.frames:
            raise self._too_many(str(frames))

    def _too_many(self, frames: str) -> UnprocessableMedia:
        return UnprocessableMedia(
            f"sampling the video means decoding {frames} frames, more than the "
            f"{self.budget.frames} allowed: its keyframes are too far apart; "
            "send one with a keyframe every few seconds"
        )


def extract_video(
    path: str | os.PathLike[str],
    max_frames: int,
    bounds: FrameBounds,
    stats: DecodeStats | None = None,
    *,
    budget: DecodeBudget | None = None,
    cancel: CancelToken | None = None,
) -> tuple[VideoMeta, list[Picture]]:
    """Read a video's metadata and up to max_frames pictures spread over it, favouring new scenes.

    Pictures are in time order, timestamped in seconds from the start of the video, and
    shown as displayed (rotation metadata applied). A video with fewer distinct frames
    than max_frames yields fewer pictures. Pass a DecodeStats to learn how many seeks and
    decoded frames it took. Sparse keyframes are decoded forward once, never from the
    same keyframe again; the work stays within budget (default DecodeBudget()).
    Raises MediaError if the file is not a readable MP4/MOV container or its frames
    exceed bounds.max_pixels; UnprocessableMedia if it has no video stream, no frame
    can be decoded (including codecs FFmpeg has no decoder for) or sampling it would
    exceed the budget; Cancelled soon after cancel is set; ValueError if
    max_frames < 1; OSError if the file itself cannot be opened.
    """
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    stats = stats if stats is not None else DecodeStats()
    meter = _Meter(budget or DecodeBudget(), cancel or CancelToken(), stats)
    with open_video(path) as container:
        meta, pictures = _extract_from_container(container, max_frames, bounds, meter)
    log.debug(
        "extracted %d of %d candidate frames from %s (%d seeks, %d frames decoded)",
        len(pictures),
        stats.candidates,
        os.fspath(path),
        stats.seeks,
        stats.frames_decoded,
    )
    return meta, pictures


def open_video(path: str | os.PathLike[str]) -> InputContainer:
    """Open an MP4/MOV file with PyAV's ISO-BMFF demuxer and nothing else; close it when done.

    Raises MediaError if the file does not start like an ISO base media file or FFmpeg
    cannot read its container; OSError if the file itself cannot be opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] not in _ISO_BMFF_BOXES:
        raise MediaError("the file is not an MP4 or MOV video")
    try:
        # Naming the demuxer stops FFmpeg probing the file as a playlist, image
        # sequence or other format that could read further files or URLs.
        return av.open(os.fspath(path), mode="r", format="mov")
    except av.error.FFmpegError as err:
        # FFmpeg's words name the server's file; they are for the log, not the client.
        log.info("FFmpeg cannot read the video container: %s", err)
        raise MediaError("the video container cannot be read: the file is damaged") from err


def _extract_from_container(
    container: InputContainer, max_frames: int, bounds: FrameBounds, meter: _Meter
) -> tuple[VideoMeta, list[Picture]]:
    stream = _video_stream(container)
    if stream.codec_context is None:
        raise UnprocessableMedia(f"no decoder for the video codec of stream {stream.index}")
    stream.thread_type = "AUTO"
    bounds.check_pixels(stream.codec_context.width, stream.codec_context.height, "video frame")
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        raise MediaError("the video stream has no time base")
    start = stream.start_time or 0
    duration = _header_duration(container, stream)
    if duration is None:
        duration = _scanned_duration(container, stream, start, meter)

    count = max(max_frames, min(_CANDIDATES_PER_FRAME * max_frames, _MAX_CANDIDATES))
    if stream.frames > 0:
        # No point seeking for more candidates than the container says it has frames.
        count = min(count, stream.frames)
    times = frame_times(duration, count)
    targets = [start + int(seconds / time_base) for seconds in times]
    meter.stats.candidates = len(targets)
    spacing = duration / count if duration > 0 else 0.0
    if _keyframes_near(stream, targets, int(spacing / 2 / time_base)):
        meter.stats.keyframes_only = True
        meter.plan(len(targets))
        frames = _keyframes_at(container, stream, targets, meter)
    else:
        meter.plan(_planned_decodes(stream, targets))
        frames = _frames_at(container, stream, targets, meter)

    candidates: list[tuple[float, Image.Image]] = []
    seen: set[int | None] = set()
    rotation = 0
    for frame in frames:
        if frame.pts in seen:
            continue
        meter.step()
        seen.add(frame.pts)
        rotation = _quarter_turns(frame.rotation)
        offset = frame.pts - start if frame.pts is not None else 0
        seconds = max(0.0, float(offset * time_base))
        candidates.append((seconds, _frame_image(frame, rotation, bounds)))
    if not candidates:
        raise UnprocessableMedia("no frame of the video could be decoded")
    candidates.sort(key=lambda candidate: candidate[0])

    scores: list[float] = []
    previous: Image.Image | None = None
    for _, image in candidates:
        signature = image.resize((_SIGNATURE_SIZE, _SIGNATURE_SIZE), Image.Resampling.BOX)
        scores.append(0.0 if previous is None else _difference(previous, signature))
        previous = signature
    # Only the chosen candidates are encoded: the others were only ever compared.
    pictures = [
        to_picture(image, image.size, bounds.jpeg_quality, timestamp=seconds)
        for seconds, image in (candidates[index] for index in pick_scene_frames(scores, max_frames))
    ]

    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation % 2:
        width, height = height, width
    meta = VideoMeta(
        duration=duration,
        width=width,
        height=height,
        fps=_frame_rate(stream),
        has_audio=bool(container.streams.audio),
    )
    return meta, pictures


def _video_stream(container: InputContainer) -> VideoStream:
    for stream in container.streams.video:
        # Cover art in audio files shows up as a one-picture "video" stream.
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise UnprocessableMedia("the file has no video stream")


def _header_duration(container: InputContainer, stream: VideoStream) -> float | None:
    if stream.duration and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _scanned_duration(
    container: InputContainer, stream: VideoStream, start: int, meter: _Meter
) -> float:
    """Find where the last video packet ends by demuxing (not decoding) the whole stream."""
    # Some writers leave the durations in an MP4's headers at zero; its packets still tell.
    end: int | None = None
    try:
        for packet in container.demux(stream):
            meter.step()
            if packet.pts is not None:
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
    except av.error.FFmpegError as err:
        # A damaged tail still leaves everything before it usable.
        log.info("stopped scanning for the video's end: %s", err)
    if end is None or stream.time_base is None:
        return 0.0
    return max(0.0, float((end - start) * stream.time_base))


def _frames_at(
    container: InputContainer, stream: VideoStream, targets: Sequence[int], meter: _Meter
) -> Iterator[VideoFrame]:
    """Yield, for each target pts in ascending order, the frame on screen at that moment.

    That is the last frame at or before the target (the first frame for a target before
    it, the last frame for one past the end). Neighbouring targets can yield the same
    frame; callers drop repeats. A target whose frame fails to decode yields nothing.
    """
    frames: Iterator[VideoFrame] | None = None
    shown: VideoFrame | None = None  # last decoded frame at or before the previous target
    ahead: VideoFrame | None = None  # first decoded frame after the previous target
    exhausted = False
    for target in targets:
        if exhausted or (ahead is not None and _after(ahead, target)):
            # Nothing new is shown between the previous target and this one.
            current = shown if shown is not None else ahead
            if current is not None:
                yield current
            continue
        try:
            furthest = ahead if ahead is not None else shown
            if frames is None or _should_seek(stream, target, furthest):
                container.seek(target, stream=stream, backward=True)
                meter.stats.seeks += 1
                frames = container.decode(stream)
                shown = ahead = None
            if ahead is not None:
                shown, ahead = ahead, None
            for frame in frames:
                meter.decoded()
                if _after(frame, target):
                    ahead = frame
                    break
                shown = frame
            else:
                exhausted = True
        except av.error.FFmpegError as err:
            # One broken stretch should not cost the other candidates; the next
            # one seeks afresh because the decode generator is now finished.
            meter.stats.decode_errors += 1
            log.info("skipping the frame at pts %d, which failed to decode: %s", target, err)
            frames = None
            shown = ahead = None
            continue
        current = shown if shown is not None else ahead
        if current is not None:
            yield current


def _keyframes_near(stream: VideoStream, targets: Sequence[int], tolerance: int) -> bool:
    """Whether every target has a keyframe within tolerance (pts units), by the index.

    Then the keyframes themselves can stand for the candidates: each stays inside its
    own slice of the video, and a keyframe decodes alone, without the frames before
    it. Encoders also tend to put keyframes at cuts. Index times are decode times, a
    few frames off the display times at most. False without an index.
    """
    entries = stream.index_entries
    if len(entries) == 0 or tolerance <= 0:
        return False
    for target in targets:
        distances = [
            abs(entries[position].timestamp - target)
            for position in (
                entries.search_timestamp(target, backward=True),
                entries.search_timestamp(target, backward=False),
            )
            if position >= 0
        ]
        if not distances or min(distances) > tolerance:
            return False
    return True


def _keyframes_at(
    container: InputContainer, stream: VideoStream, targets: Sequence[int], meter: _Meter
) -> Iterator[VideoFrame]:
    """Yield, for each target pts, the keyframe nearest it, decoded alone; repeats once.

    Only keyframes are read (a seek and a short demux per target, the keyframe before
    the target and the one after, whichever is nearer) and then decoded together: a
    sequence of keyframes is a valid stream on its own, so FFmpeg's frame threads
    decode them in parallel. A packet that fails to decode is skipped.
    """
    packets: list[av.Packet] = []
    taken: set[int | None] = set()
    for target in targets:
        meter.step()
        try:
            packet = _nearest_keyframe(container, stream, target, meter)
        except av.error.FFmpegError as err:
            meter.stats.decode_errors += 1
            log.info("no keyframe read near pts %d: %s", target, err)
            continue
        meter.stats.seeks += 1
        if packet is not None and packet.pts not in taken:
            taken.add(packet.pts)
            packets.append(packet)
    context = stream.codec_context
    for packet in [*packets, None]:
        try:
            decoded = context.decode(packet)
        except av.error.FFmpegError as err:
            meter.stats.decode_errors += 1
            log.info("skipping a keyframe that failed to decode: %s", err)
            continue
        for frame in decoded:
            meter.decoded()
            yield frame


def _nearest_keyframe(
    container: InputContainer, stream: VideoStream, target: int, meter: _Meter
) -> av.Packet | None:
    """The keyframe packet nearest target in display time: the one before or the one after.

    Demuxes (never decodes) from the keyframe before target until a later keyframe, or
    until packets lie further past target than that keyframe lies before it.
    """
    container.seek(target, stream=stream, backward=True)
    before: av.Packet | None = None
    for packet in container.demux(stream):
        meter.step()
        if packet.pts is None:
            continue  # the demuxer's empty packet at the end
        if before is not None and packet.pts - target >= target - (before.pts or 0):
            return before  # nothing from here on is nearer
        if packet.is_keyframe:
            if packet.pts > target:
                return packet
            before = packet
    return before


def _planned_decodes(stream: VideoStream, targets: Sequence[int]) -> int | None:
    """How many frames _frames_at will decode to reach targets, read from the index.

    Follows its rule: from the keyframe before a target when that lies beyond what is
    decoded, else onwards from there, up to the first frame after the target. An
    estimate (the index is in decode order); None when the container has no index.
    """
    entries = stream.index_entries
    if len(entries) == 0:
        return None
    total = 0
    furthest = -1  # index position of the last packet decoded so far
    for target in targets:
        wanted = min(
            entries.search_timestamp(target, backward=True, any_frame=True) + 1, len(entries) - 1
        )
        if wanted <= furthest:
            continue
        keyframe = entries.search_timestamp(target, backward=True)
        first = keyframe if keyframe > furthest else furthest + 1
        total += wanted - first + 1
        furthest = wanted
    return total


def _after(frame: VideoFrame, target: int) -> bool:
    # Frames without a timestamp cannot be placed, so they never end a search early.
    return frame.pts is not None and frame.pts > target


def _should_seek(stream: VideoStream, target: int, last: VideoFrame | None) -> bool:
    """Seek only when the keyframe before target lies beyond the furthest decoded frame."""
    if last is None or last.pts is None:
        return True
    entries = stream.index_entries
    if len(entries) == 0:
        return True
    position = entries.search_timestamp(target, backward=True)
    if position < 0:
        return False
    # Index timestamps are decode times; a keyframe's display time is never earlier.
    return entries[position].timestamp > last.pts


def _frame_image(frame: VideoFrame, quarter_turns: int, bounds: FrameBounds) -> Image.Image:
    """The frame as displayed, in RGB, scaled to fit bounds."""
    if quarter_turns % 2:
        display_width, display_height = bounds.fit_size(frame.height, frame.width)
        stored = (display_height, display_width)
    else:
        stored = bounds.fit_size(frame.width, frame.height)
    # Scaling inside swscale while converting to RGB is far cheaper than
    # converting the full-size frame and resizing it in Pillow.
    img: Image.Image = frame.to_image(width=stored[0], height=stored[1], interpolation="AREA")
    if quarter_turns:
        img = img.transpose(_ROTATIONS[quarter_turns])
    return img


# Counter-clockwise quarter turns, matching FFmpeg's display-matrix convention.
_ROTATIONS = {
    1: Image.Transpose.ROTATE_90,
    2: Image.Transpose.ROTATE_180,
    3: Image.Transpose.ROTATE_270,
}


def _quarter_turns(degrees: float) -> int:
    return round(degrees / 90) % 4


def _difference(first: Image.Image, second: Image.Image) -> float:
    """Mean absolute per-channel difference of two equally sized RGB images, from 0 to 1."""
    means = ImageStat.Stat(ImageChops.difference(first, second)).mean
    return sum(means) / (255 * len(means))


def _frame_rate(stream: VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0
