"""Decoding a video's candidate frames within a budget: the two ways to walk the stream.

Where the index puts a keyframe near every candidate, the keyframes alone are read and
decoded; otherwise frames are decoded forward, seeking only where that saves work. The
index also says what either walk will cost, so a video over budget is refused before
its frames are decoded. video.py chooses the candidates and turns frames into pictures.
"""

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import av.error
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from frame_service.cancellation import CancelToken
from frame_service.frames import DecodeBudget, UnprocessableMedia

log = logging.getLogger(__name__)


@dataclass
class DecodeStats:
    """Counters for the work one extract_video call did, so callers and tests can see its cost."""

    candidates: int = 0
    seeks: int = 0
    frames_decoded: int = 0
    decode_errors: int = 0
    keyframes_only: bool = False  # the candidates were keyframes, each decoded alone


class DecodeMeter:
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


def frames_at(
    container: InputContainer,
    stream: VideoStream,
    targets: Sequence[int],
    tolerance: int,
    meter: DecodeMeter,
) -> Iterator[VideoFrame]:
    """The frames shown at targets (pts, ascending), by the cheaper walk, within the budget.

    Keyframes stand for the candidates when the index has one within tolerance (pts
    units) of each; else the frames on screen at each target are decoded. Raises
    UnprocessableMedia before decoding when the index says the walk costs more frames
    than the budget allows (and while decoding, past the budget, without an index).
    """
    if _keyframes_near(stream, targets, tolerance):
        meter.stats.keyframes_only = True
        meter.plan(len(targets))
        return _keyframes_at(container, stream, targets, meter)
    meter.plan(_planned_decodes(stream, targets))
    return _frames_on_screen(container, stream, targets, meter)


def _frames_on_screen(
    container: InputContainer, stream: VideoStream, targets: Sequence[int], meter: DecodeMeter
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
    container: InputContainer, stream: VideoStream, targets: Sequence[int], meter: DecodeMeter
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
    container: InputContainer, stream: VideoStream, target: int, meter: DecodeMeter
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
    """How many frames _frames_on_screen will decode to reach targets, read from the index.

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
