"""Frame choice: which moments of a video to look at, as pure functions of durations and scores."""

import itertools
import math
import statistics
from collections.abc import Sequence

# How far a candidate's change score (mean absolute RGB difference of 16x16
# thumbnails, 0 to 1) must exceed its neighbours' for it to count as a cut;
# measured motion within one shot stays well below this, real cuts well above.
_MIN_CUT = 0.08
# Candidates looked at for each frame kept, and at most: the scene choice needs a few
# more moments than it keeps.
_CANDIDATES_PER_FRAME = 3
_MAX_CANDIDATES = 48


def candidate_count(max_frames: int, frames: int | None = None) -> int:
    """How many candidate moments to look at to keep max_frames, never more than the
    frames there are (when known)."""
    count = max(max_frames, min(_CANDIDATES_PER_FRAME * max_frames, _MAX_CANDIDATES))
    return count if frames is None else min(count, frames)


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
    picks: list[int] = []
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
