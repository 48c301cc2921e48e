"""Frame extraction: turns uploaded photos and videos into small, metadata-free JPEG pictures."""

import io
import itertools
import logging
import math
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image, ImageChops, ImageOps, ImageStat, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Restricting Pillow to these plugins means hostile files never reach the
# dozens of rarely used decoders Pillow ships.
_IMAGE_PLUGINS = ("JPEG", "PNG")
# Phone cameras write JPEGs with an MPF segment, which Pillow reports as "MPO".
_ACCEPTED_IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG"})
_DRAFTABLE_FORMATS = frozenset({"JPEG", "MPO"})
# Pillow can only resample these modes properly; palette, bilevel and 16-bit
# images are converted to RGB before resizing instead.
_RESIZABLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})
# Everything Pillow might raise for damaged image data once the file has been opened.
_CORRUPT_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

# Box types that can start an ISO base media file (MP4, MOV, 3GP).
_ISO_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"

_CANDIDATES_PER_FRAME = 3
_MAX_CANDIDATES = 48
_SIGNATURE_SIZE = 16
# How far a candidate's change score (mean absolute RGB difference of 16x16
# thumbnails, 0 to 1) must exceed its neighbours' for it to count as a cut;
# measured motion within one shot stays well below this, real cuts well above.
_MIN_CUT = 0.08


class MediaError(Exception):
    """The file is not a valid or supported image or video."""


class UnprocessableMedia(Exception):
    """The container is valid but holds nothing usable: no video stream or no decodable frame."""


@dataclass(frozen=True)
class FrameBounds:
    """Size, quality and safety limits for every picture produced."""

    max_side: int = 2048
    short_side: int = 768
    jpeg_quality: int = 85
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if min(self.max_side, self.short_side, self.max_pixels) < 1:
            raise ValueError("FrameBounds sizes must be positive")
        if not 1 <= self.jpeg_quality <= 95:
            # Pillow documents quality above 95 as wasteful and 0 as meaningless.
            raise ValueError("FrameBounds.jpeg_quality must be between 1 and 95")


@dataclass(frozen=True)
class Picture:
    """One RGB baseline JPEG without any metadata, ready to send upstream."""

    jpeg: bytes
    width: int
    height: int
    timestamp: float | None = None


@dataclass(frozen=True)
class VideoMeta:
    """What the container says about a video; width and height are as displayed (rotated)."""

    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool


@dataclass
class DecodeStats:
    """Counters for the work one extract_video call did, so callers and tests can see its cost."""

    candidates: int = 0
    seeks: int = 0
    frames_decoded: int = 0
    decode_errors: int = 0


def prepare_image(path: str | os.PathLike[str], bounds: FrameBounds) -> Picture:
    """Decode a JPEG or PNG photo, apply its EXIF orientation, and re-encode it within bounds.

    Raises MediaError if the file is not a JPEG or PNG, is corrupt or truncated, or has
    more pixels than bounds.max_pixels (or than Pillow's decompression-bomb limit).
    Raises OSError if the file itself cannot be opened.
    """
    # Opened here rather than by Pillow so a missing file stays an OSError (a
    # server fault) instead of being reported as a bad upload.
    with open(path, "rb") as fh:
        try:
            with Image.open(fh, formats=_IMAGE_PLUGINS) as img:
                return _prepare_opened(img, bounds)
        except Image.DecompressionBombError as err:
            raise MediaError(f"the image is too large to decode safely: {err}") from err
        except UnidentifiedImageError as err:
            raise MediaError("the file is not a JPEG or PNG image") from err
        except _CORRUPT_IMAGE_ERRORS as err:
            raise MediaError(f"the image is corrupt or truncated: {err}") from err


def extract_video(
    path: str | os.PathLike[str],
    max_frames: int,
    bounds: FrameBounds,
    stats: DecodeStats | None = None,
) -> tuple[VideoMeta, list[Picture]]:
    """Read a video's metadata and up to max_frames pictures spread over it, favouring new scenes.

    Pictures are in time order, timestamped in seconds from the start of the video, and
    shown as displayed (rotation metadata applied). A video with fewer distinct frames
    than max_frames yields fewer pictures. Pass a DecodeStats to learn how many seeks and
    decoded frames it took.
    Raises MediaError if the file is not a readable MP4/MOV/Matroska/WebM container or its
    frames exceed bounds.max_pixels; UnprocessableMedia if it has no video stream or no
    frame can be decoded (including codecs FFmpeg has no decoder for); ValueError if
    max_frames < 1; OSError if the file itself cannot be opened.
    """
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    stats = stats if stats is not None else DecodeStats()
    demuxer = _sniff_video_container(path)
    try:
        # Naming the demuxer stops FFmpeg probing the file as a playlist, image
        # sequence or other format that could read further files or URLs.
        container = av.open(os.fspath(path), mode="r", format=demuxer)
    except av.error.FFmpegError as err:
        raise MediaError(f"the video container cannot be read: {err}") from err
    with container:
        meta, pictures = _extract_from_container(container, max_frames, bounds, stats)
    logger.debug(
        "extracted %d of %d candidate frames from %s (%d seeks, %d frames decoded)",
        len(pictures),
        stats.candidates,
        os.fspath(path),
        stats.seeks,
        stats.frames_decoded,
    )
    return meta, pictures


def frame_times(duration: float, count: int) -> list[float]:
    """Return count sample times (seconds) at the centres of count equal slices of the video.

    Centring keeps samples off the first frame (often black) and off the exact end,
    where there may be no frame. A non-positive or unknown duration gives [0.0].
    Raises nothing; count <= 0 gives [].
    """
    if count <= 0:
        return []
    if not math.isfinite(duration) or duration <= 0:
        return [0.0]
    step = duration / count
    return [step * (index + 0.5) for index in range(count)]


def pick_scene_frames(
    change_scores: Sequence[float], count: int, *, min_cut: float = _MIN_CUT
) -> list[int]:
    """Choose count candidate indices, ascending, that cover the video and give every scene a pick.

    change_scores[i] is how different candidate i is from candidate i - 1 (0 to 1). A
    candidate starts a new shot when its score beats the median of its neighbours'
    scores by at least min_cut, so steady motion such as a camera pan is not mistaken
    for cuts. The count - 1 strongest cuts split the candidates into shots; each shot
    gets one pick, spare picks go to the longest shots, and picks sit evenly inside
    their shot (its centre for one pick), away from transitions. Without cuts this is
    plain even sampling. With count >= len(change_scores) every index is returned.
    Raises nothing; count <= 0 gives [].
    """
    total = len(change_scores)
    if count <= 0 or total == 0:
        return []
    if count >= total:
        return list(range(total))
    strengths = {
        index: change_scores[index] - _neighbour_median(change_scores, index)
        for index in range(1, total)
    }
    strongest = sorted(
        (index for index, strength in strengths.items() if strength >= min_cut),
        key=lambda index: (-strengths[index], index),
    )
    edges = [0, *sorted(strongest[: count - 1]), total]
    shots = list(itertools.pairwise(edges))
    seats = [1] * len(shots)
    for _ in range(count - len(shots)):
        # D'Hondt allocation: the shot with most candidates per pick gets the next one.
        growable = [shot for shot, (start, stop) in enumerate(shots) if seats[shot] < stop - start]
        best = max(
            growable,
            key=lambda shot: ((shots[shot][1] - shots[shot][0]) / (seats[shot] + 1), -shot),
        )
        seats[best] += 1
    picks = []
    for (start, stop), picks_in_shot in zip(shots, seats, strict=True):
        length = stop - start
        picks.extend(
            start + (2 * slot + 1) * length // (2 * picks_in_shot) for slot in range(picks_in_shot)
        )
    return picks


def _neighbour_median(scores: Sequence[float], index: int) -> float:
    # Index 0 has no predecessor, so its score carries no information.
    neighbours = range(max(1, index - 2), min(len(scores), index + 3))
    window = [scores[other] for other in neighbours if other != index]
    return statistics.median(window) if window else 0.0


def _prepare_opened(img: Image.Image, bounds: FrameBounds) -> Picture:
    if img.format not in _ACCEPTED_IMAGE_FORMATS:
        raise MediaError(f"unsupported image format {img.format}; only JPEG and PNG are accepted")
    width, height = img.size
    _check_pixels(width, height, bounds, "image")
    target = _fit_size(width, height, bounds)
    if img.format in _DRAFTABLE_FORMATS:
        # Lets libjpeg decode at 1/2, 1/4 or 1/8 scale, never below target.
        img.draft("RGB", target)
    # In place: the copy exif_transpose would otherwise make can be 100+ MB.
    ImageOps.exif_transpose(img, in_place=True)
    if (img.width > img.height) != (target[0] > target[1]):
        # The EXIF orientation swapped the axes; the bounds are symmetric, so
        # the target simply swaps too.
        target = (target[1], target[0])
    return _to_picture(img, target, bounds.jpeg_quality)


def _check_pixels(width: int, height: int, bounds: FrameBounds, what: str) -> None:
    if width * height > bounds.max_pixels:
        raise MediaError(
            f"the {what} is {width}x{height} ({width * height} pixels), "
            f"more than the {bounds.max_pixels} allowed"
        )


def _fit_size(width: int, height: int, bounds: FrameBounds) -> tuple[int, int]:
    scale = min(1.0, bounds.max_side / max(width, height), bounds.short_side / min(width, height))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_picture(
    img: Image.Image, size: tuple[int, int], quality: int, timestamp: float | None = None
) -> Picture:
    """Convert to RGB, downscale to size and encode as a metadata-free baseline JPEG."""
    if img.mode not in _RESIZABLE_MODES or "transparency" in img.info:
        img = _to_rgb(img)
    if img.size != size:
        # reducing_gap lets Pillow box-reduce first, so huge images stay cheap.
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    img = _to_rgb(img)
    # resize/convert copy info, and Pillow writes info["comment"] back into the
    # JPEG; emptying it guarantees nothing from the upload travels upstream.
    img.info = {}
    buffer = io.BytesIO()
    img.save(
        buffer,
        format="JPEG",
        quality=quality,
        optimize=True,
        progressive=False,
        exif=b"",
        icc_profile=None,
    )
    return Picture(jpeg=buffer.getvalue(), width=img.width, height=img.height, timestamp=timestamp)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "I" or img.mode.startswith("I;16"):
        # Pillow clips 16-bit samples to 255 instead of scaling them, which turns
        # 16-bit greyscale PNGs white.
        img = img.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _sniff_video_container(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] in _ISO_BMFF_BOXES:
        return "mov"
    if head.startswith(_MATROSKA_MAGIC):
        return "matroska"
    raise MediaError("the file is not an MP4, MOV, Matroska or WebM video")


def _extract_from_container(
    container: InputContainer, max_frames: int, bounds: FrameBounds, stats: DecodeStats
) -> tuple[VideoMeta, list[Picture]]:
    stream = _video_stream(container)
    if stream.codec_context is None:
        raise UnprocessableMedia(f"no decoder for the video codec of stream {stream.index}")
    stream.thread_type = "AUTO"
    _check_pixels(stream.codec_context.width, stream.codec_context.height, bounds, "video frame")
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        raise MediaError("the video stream has no time base")
    start = stream.start_time or 0
    duration = _header_duration(container, stream)
    if duration is None:
        duration = _scanned_duration(container, stream, start)

    count = max(max_frames, min(_CANDIDATES_PER_FRAME * max_frames, _MAX_CANDIDATES))
    if stream.frames > 0:
        # No point seeking for more candidates than the container says it has frames.
        count = min(count, stream.frames)
    targets = [start + int(seconds / time_base) for seconds in frame_times(duration, count)]
    stats.candidates = len(targets)

    pictures: list[Picture] = []
    scores: list[float] = []
    previous: Image.Image | None = None
    seen: set[int | None] = set()
    rotation = 0
    for frame in _frames_at(container, stream, targets, stats):
        if frame.pts in seen:
            continue
        seen.add(frame.pts)
        rotation = _quarter_turns(frame.rotation)
        signature = frame.to_image(
            width=_SIGNATURE_SIZE, height=_SIGNATURE_SIZE, interpolation="AREA"
        )
        scores.append(0.0 if previous is None else _difference(previous, signature))
        previous = signature
        offset = frame.pts - start if frame.pts is not None else 0
        seconds = max(0.0, float(offset * time_base))
        pictures.append(_frame_picture(frame, rotation, seconds, bounds))
    if not pictures:
        raise UnprocessableMedia("no frame of the video could be decoded")

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
    return meta, [pictures[index] for index in pick_scene_frames(scores, max_frames)]


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


def _scanned_duration(container: InputContainer, stream: VideoStream, start: int) -> float:
    """Find where the last video packet ends by demuxing (not decoding) the whole stream."""
    # Live-recorded WebM (browser MediaRecorder) carries no duration at all.
    end: int | None = None
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
    except av.error.FFmpegError as err:
        # A damaged tail still leaves everything before it usable.
        logger.info("stopped scanning for the video's end: %s", err)
    if end is None or stream.time_base is None:
        return 0.0
    return max(0.0, float((end - start) * stream.time_base))


def _frames_at(
    container: InputContainer, stream: VideoStream, targets: Sequence[int], stats: DecodeStats
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
                stats.seeks += 1
                frames = container.decode(stream)
                shown = ahead = None
            if ahead is not None:
                shown, ahead = ahead, None
            for frame in frames:
                stats.frames_decoded += 1
                if _after(frame, target):
                    ahead = frame
                    break
                shown = frame
            else:
                exhausted = True
        except av.error.FFmpegError as err:
            # One broken stretch should not cost the other candidates; the next
            # one seeks afresh because the decode generator is now finished.
            stats.decode_errors += 1
            logger.info("skipping the frame at pts %d, which failed to decode: %s", target, err)
            frames = None
            shown = ahead = None
            continue
        current = shown if shown is not None else ahead
        if current is not None:
            yield current


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


def _frame_picture(
    frame: VideoFrame, quarter_turns: int, seconds: float, bounds: FrameBounds
) -> Picture:
    if quarter_turns % 2:
        display_width, display_height = _fit_size(frame.height, frame.width, bounds)
        stored = (display_height, display_width)
    else:
        stored = _fit_size(frame.width, frame.height, bounds)
    # Scaling inside swscale while converting to RGB is far cheaper than
    # converting the full-size frame and resizing it in Pillow.
    img = frame.to_image(width=stored[0], height=stored[1], interpolation="AREA")
    if quarter_turns:
        img = img.transpose(_ROTATIONS[quarter_turns])
    return _to_picture(img, img.size, bounds.jpeg_quality, timestamp=seconds)


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
