"""Videos to pictures: PyAV reads the container, decodes a few candidate frames and keeps the best.

This module opens the container, chooses the candidate moments and the best of their
frames, and turns those into pictures; decoding.py decodes the candidates' frames.
"""

import logging
import os

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image, ImageChops, ImageStat

from contracts.media import HEAD_BYTES, video_demuxer
from frame_service import decoding
from frame_service.cancellation import CancelToken
from frame_service.decoding import DecodeMeter, DecodeStats
from frame_service.frame_choice import candidate_count, frame_times, pick_scene_frames
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


_SIGNATURE_SIZE = 16


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
    meter = DecodeMeter(budget or DecodeBudget(), cancel or CancelToken(), stats)
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
    """Open a video with the one demuxer its first bytes name, and nothing else: ISO base
    media (MP4, MOV, M4V) or Matroska (MKV, WebM); close it when done.

    Raises MediaError if the file starts like neither or FFmpeg cannot read its
    container; OSError if the file itself cannot be opened.
    """
    with open(path, "rb") as fh:
        demuxer = video_demuxer(fh.read(HEAD_BYTES))  # WebM is Matroska with fewer codecs
    if demuxer is None:
        raise MediaError("the file is not an MP4, MOV, M4V, WebM or MKV video")
    try:
        # Naming the demuxer stops FFmpeg probing the file as a playlist, image
        # sequence or other format that could read further files or URLs.
        return av.open(os.fspath(path), mode="r", format=demuxer)
    except av.error.FFmpegError as err:
        # FFmpeg's words name the server's file; they are for the log, not the client.
        log.info("FFmpeg cannot read the video container: %s", err)
        raise MediaError("the video container cannot be read: the file is damaged") from err


def _extract_from_container(
    container: InputContainer, max_frames: int, bounds: FrameBounds, meter: DecodeMeter
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

    # No point seeking for more candidates than the container says it has frames.
    count = candidate_count(max_frames, stream.frames if stream.frames > 0 else None)
    times = frame_times(duration, count)
    targets = [start + int(seconds / time_base) for seconds in times]
    meter.stats.candidates = len(targets)
    spacing = duration / count if duration > 0 else 0.0
    # A keyframe within half a slice of its target stays inside the target's own slice.
    tolerance = int(spacing / 2 / time_base)
    frames = decoding.frames_at(container, stream, targets, tolerance, meter)

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
    pictures = choose_pictures(candidates, max_frames, bounds.jpeg_quality)

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


def choose_pictures(
    candidates: list[tuple[float, Image.Image]], max_frames: int, quality: int
) -> list[Picture]:
    """Up to max_frames of the candidates (seconds, RGB image), favouring new scenes, as
    pictures in time order; only the chosen ones are encoded."""
    candidates = sorted(candidates, key=lambda candidate: candidate[0])
    scores: list[float] = []
    previous: Image.Image | None = None
    for _, image in candidates:
        signature = image.resize((_SIGNATURE_SIZE, _SIGNATURE_SIZE), Image.Resampling.BOX)
        scores.append(0.0 if previous is None else _difference(previous, signature))
        previous = signature
    return [
        to_picture(image, image.size, quality, timestamp=seconds)
        for seconds, image in (candidates[index] for index in pick_scene_frames(scores, max_frames))
    ]


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
    container: InputContainer, stream: VideoStream, start: int, meter: DecodeMeter
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
