"""Capture times of photos: the one rule for the order photos are told in, and the words
for the time between two of them (the gateway orders, the story service says)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def capture_times(stamps: Sequence[str | None]) -> list[datetime] | None:
    """Each photo's capture time, when every one has a readable one; else None.

    EXIF times are the camera's local time; when only some carry a UTC offset the
    offsets are set aside, so the times stay comparable.
    """
    times: list[datetime] = []
    for stamp in stamps:
        if not stamp:
            return None
        try:
            times.append(datetime.fromisoformat(stamp))
        except ValueError:
            return None
    if len({t.tzinfo is None for t in times}) > 1:
        times = [t.replace(tzinfo=None) for t in times]
    return times


def capture_order(stamps: Sequence[str | None]) -> list[int] | None:
    """The photos' indices in the order they were taken (ties keep the upload order),
    or None when not every photo says when it was taken."""
    times = capture_times(stamps)
    if times is None:
        return None
    return sorted(range(len(times)), key=lambda index: times[index])


def time_between(earlier: datetime, later: datetime) -> str:
    """How long after ``earlier`` ``later`` was, in a story's words ("two hours later")."""
    seconds = (later - earlier).total_seconds()
    if seconds < 60:
        return "moments later"
    for unit, size, up_to in (
        ("minute", 60, 90 * 60),
        ("hour", 3600, 36 * 3600),
        ("day", 86400, 60 * 86400),
        ("month", 30 * 86400, 730 * 86400),
    ):
        if seconds < up_to:
            count = round(seconds / size)
            return f"{_NUMBERS.get(count, str(count))} {unit}{'' if count == 1 else 's'} later"
    years = round(seconds / (365 * 86400))
    return f"{_NUMBERS.get(years, str(years))} year{'' if years == 1 else 's'} later"


_NUMBERS = {
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
    11: "eleven",
    12: "twelve",
}
