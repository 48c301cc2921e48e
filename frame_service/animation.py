"""Animated GIFs and WebPs as short videos: frames chosen as a video's are, without sound.

The file's blocks are read first (never decoded) for its canvas and how long each frame
is shown: that is its timeline, and what decoding it will cost. Pillow then decodes the
frames in order, as it must (each is drawn over the one before), up to the last one
chosen, and keeps a small copy of the frames on screen at the candidate moments; the
scene choice and encoding are the video's (video.choose_pictures).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from frame_service.cancellation import CancelToken
from frame_service.decoding import DecodeMeter, DecodeStats
from frame_service.frame_choice import candidate_count, frame_times
from frame_service.frames import DecodeBudget, FrameBounds, MediaError, Picture, VideoMeta
from frame_service.images import to_rgb
from frame_service.video import choose_pictures

log = logging.getLogger(__name__)

_GIF_MAGIC = (b"GIF87a", b"GIF89a")
# Browsers show a frame that asks for 10 ms or less (GIF's 0 and 1 hundredths, and
# WebP's 0 to 10 ms) for 100 ms: the animation is told as people see it play.
_SHORTEST_MS = 10
_SHOWN_MS = 100
# Memory while decoding, per canvas pixel: Pillow's RGBA frame, the one before it and
# the disposal copy for a GIF; libwebp's canvas and Pillow's copy for a WebP. A 4K
# animation raised the peak RSS by about 100 MiB (GIF) and 125 MiB (WebP).
_BYTES_PER_PIXEL = 16
# What Pillow raises for damaged frames; IndexError is its GIF reader meeting the end of
# a file cut inside a frame's header.
_CORRUPT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError)


@dataclass(frozen=True)
class Timeline:
    """An animation's canvas and how long (ms) each of its frames is shown, in order."""

    width: int
    height: int
    shown: tuple[int, ...]
    # False when the file ends inside a frame: a partial upload is refused, not told
    # from the frames before the cut.
    complete: bool = True

    @property
    def duration(self) -> float:
        """Seconds."""
        return sum(self.shown) / 1000

    def starts(self) -> list[float]:
        """When each frame is first shown, in seconds."""
        return [ms / 1000 for ms in itertools.accumulate(self.shown[:-1], initial=0)]


def read_timeline(path: str | os.PathLike[str]) -> Timeline | None:
    """The timeline of an animated GIF or WebP, read from its blocks without decoding.

    None for any other file, a GIF or WebP of one frame included; a damaged file gives
    the frames found before the damage (decoding then refuses it).
    Raises OSError if the file cannot be opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head.startswith(_GIF_MAGIC):
            timeline = _gif_timeline(fh)
        elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            timeline = _webp_timeline(fh)
        else:
            return None
    return timeline if len(timeline.shown) > 1 else None


def extract_animation(
    path: str | os.PathLike[str],
    timeline: Timeline,
    max_frames: int,
    bounds: FrameBounds,
    *,
    budget: DecodeBudget | None = None,
    cancel: CancelToken | None = None,
) -> tuple[VideoMeta, list[Picture]]:
    """An animation's metadata (no audio) and up to max_frames pictures spread over it, as
    extract_video gives a video's: timestamped, in time order, favouring new scenes.

    Raises MediaError, before decoding, if the canvas has more than bounds.max_pixels or
    would take more than bounds.max_decoded_mb, or if the frames to decode exceed
    budget.frames or budget.megapixels, and while decoding if the file is corrupt or
    truncated; UnprocessableMedia past budget.seconds; Cancelled soon after cancel is
    set; ValueError if max_frames < 1; OSError if the file itself cannot be opened.
    """
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if not timeline.complete:
        raise MediaError("the animation is corrupt or truncated")
    budget = budget or DecodeBudget()
    starts = timeline.starts()
    count = candidate_count(max_frames, len(starts))
    # The frame on screen at each candidate moment.
    wanted = sorted(
        {bisect.bisect_right(starts, t) - 1 for t in frame_times(timeline.duration, count)}
    )
    _check_cost(timeline, wanted[-1] + 1, bounds, budget)
    meter = DecodeMeter(budget, cancel or CancelToken(), DecodeStats(candidates=len(wanted)))
    with open(path, "rb") as fh:
        try:
            with Image.open(fh, formats=("GIF", "WEBP")) as img:
                candidates = _candidates(img, wanted, starts, bounds, meter)
        except UnidentifiedImageError as err:
            raise MediaError("the file is not an animated GIF or WebP") from err
        except _CORRUPT_ERRORS as err:
            log.info("Pillow cannot decode the animation: %s", err)
            raise MediaError("the animation is corrupt or truncated") from err
    pictures = choose_pictures(candidates, max_frames, bounds.jpeg_quality)
    frames = len(timeline.shown)
    meta = VideoMeta(
        duration=timeline.duration,
        width=timeline.width,
        height=timeline.height,
        fps=frames / timeline.duration,
        has_audio=False,
    )
    return meta, pictures


def _check_cost(timeline: Timeline, frames: int, bounds: FrameBounds, budget: DecodeBudget) -> None:
    """Refuse, before decoding, an animation whose frames cost more than the budgets."""
    width, height = timeline.width, timeline.height
    bounds.check_pixels(width, height, "animation frame")
    bounds.check_memory(width * height * _BYTES_PER_PIXEL, width, height)
    megapixels = -(-frames * width * height // 1_000_000)
    if frames > budget.frames or megapixels > budget.megapixels:
        raise MediaError(
            f"the animation has {len(timeline.shown)} frames of {width}x{height}: telling it "
            f"means decoding {frames} of them ({megapixels} megapixels), more than the "
            f"{budget.frames} frames or {budget.megapixels} megapixels allowed; "
            "send it as a video (MP4 or WebM)"
        )


def _candidates(
    img: Image.Image,
    wanted: list[int],
    starts: list[float],
    bounds: FrameBounds,
    meter: DecodeMeter,
) -> list[tuple[float, Image.Image]]:
    """Decode frames 0 to wanted[-1] in order; the wanted ones, small and in RGB."""
    chosen = set(wanted)
    candidates: list[tuple[float, Image.Image]] = []
    for index in range(wanted[-1] + 1):
        meter.step()
        img.seek(index)
        img.load()
        meter.decoded()
        if index in chosen:
            frame = to_rgb(img)
            size = bounds.fit_size(*frame.size)
            # A picture of its own either way: img's pixels change with the next frame.
            if frame.size != size:
                frame = frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            elif frame is img:
                frame = img.copy()
            candidates.append((starts[index], frame))
    return candidates


def _shown(milliseconds: int) -> int:
    return _SHOWN_MS if milliseconds <= _SHORTEST_MS else milliseconds


def _gif_timeline(fh: BinaryIO) -> Timeline:
    """Walk a GIF's blocks: its logical screen, then each image's delay and extent."""
    fh.seek(0)
    header = fh.read(13)  # the signature and the logical screen descriptor
    if len(header) < 13:
        return Timeline(0, 0, ())
    width, height = header[6] | header[7] << 8, header[8] | header[9] << 8
    if header[10] & 0x80:
        fh.seek(3 << ((header[10] & 7) + 1), os.SEEK_CUR)  # the global colour table
    shown: list[int] = []
    delay = 0
    complete = True
    while introducer := fh.read(1):
        if introducer == b"!":  # an extension: a label, then sub-blocks
            label = fh.read(1)
            block = _sub_block(fh)
            if label == b"\xf9" and len(block) >= 3:  # graphic control: the frame's delay
                delay = (block[1] | block[2] << 8) * 10
            if block:
                complete = _skip_sub_blocks(fh)
        elif introducer == b",":  # an image: its descriptor, colour table and data
            descriptor = fh.read(9)
            if len(descriptor) < 9:
                complete = False
                break
            left, top = descriptor[0] | descriptor[1] << 8, descriptor[2] | descriptor[3] << 8
            right = left + (descriptor[4] | descriptor[5] << 8)
            bottom = top + (descriptor[6] | descriptor[7] << 8)
            # Pillow grows the canvas to hold a frame drawn past its edge.
            width, height = max(width, right), max(height, bottom)
            if descriptor[8] & 0x80:
                fh.seek(3 << ((descriptor[8] & 7) + 1), os.SEEK_CUR)
            fh.read(1)  # LZW minimum code size
            complete = _skip_sub_blocks(fh)
            shown.append(_shown(delay))
            delay = 0
        else:  # the trailer, or damage (a missing trailer is forgiven, as browsers do)
            break
    return Timeline(width, height, tuple(shown), complete)


def _webp_timeline(fh: BinaryIO) -> Timeline:
    """Walk a WebP's chunks after its RIFF header: the VP8X canvas, each ANMF's duration."""
    fh.seek(12)
    end = os.fstat(fh.fileno()).st_size
    width = height = 0
    shown: list[int] = []
    while len(chunk := fh.read(8)) == 8:
        fourcc, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        body = fh.read(16) if fourcc in (b"VP8X", b"ANMF") else b""
        if fourcc == b"VP8X" and len(body) >= 10:
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"ANMF" and len(body) == 16:
            shown.append(_shown(int.from_bytes(body[12:15], "little")))
        fh.seek(size + (size & 1) - len(body), os.SEEK_CUR)  # chunks are padded to even
    # A chunk cut short, or a final padding byte some writers leave out.
    complete = fh.tell() <= end + 1
    return Timeline(width, height, tuple(shown), complete)


def _sub_block(fh: BinaryIO) -> bytes:
    size = fh.read(1)
    return fh.read(size[0]) if size else b""


def _skip_sub_blocks(fh: BinaryIO) -> bool:
    """Seek past data sub-blocks; False if the file ends before their terminator."""
    while size := fh.read(1):
        if not size[0]:
            return True
        fh.seek(size[0], os.SEEK_CUR)
    return False
