"""The offline benchmark's printout: the five measures against the issue's goals, before and
after, then each answer, the memory and the first words of a story; and the answers as JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.offline_client import Answer
from bench.offline_pipelines import DESCRIPTIONS, PIPELINES, Figures, Memory
from translation_service.translate import thai_share

# The goals.
GOAL_PHOTO = 45.0
GOAL_FIRST_WORDS = 8.0
GOAL_VIDEO = 70.0
GOAL_AT_ONCE = 2.5
GOAL_THAI_SHARE = 0.95
PREVIEW = 200

Cell = tuple[float, str, bool | None]  # value, as printed, goal met (None: not measured)


def median(values: Sequence[float]) -> float:
    """The median of the finite `values` (NaN marks a failed answer); NaN if none."""
    finite = [value for value in values if math.isfinite(value)]
    return statistics.median(finite) if finite else math.nan


def seconds_cell(seconds: float, goal: float) -> Cell:
    """`seconds` against `goal`; NaN, when no answer gave the figure, as "failed"."""
    if math.isnan(seconds):
        return seconds, "failed", False
    return seconds, f"{seconds:.1f} s", seconds <= goal


def photo_cell(figures: Figures) -> Cell:
    return seconds_cell(median([answer.total for answer in figures.singles]), GOAL_PHOTO)


def first_words_cell(figures: Figures) -> Cell:
    seconds = median([answer.first_words for answer in figures.singles])
    return seconds_cell(seconds, GOAL_FIRST_WORDS)


def video_cell(figures: Figures) -> Cell:
    if figures.video is None:
        return math.nan, "skipped", None
    return seconds_cell(figures.video.total, GOAL_VIDEO)


def at_once_cell(figures: Figures) -> Cell:
    if not figures.at_once:
        return math.nan, "skipped", None
    wall = figures.at_once_wall
    ratio = wall / median([answer.total for answer in figures.singles])
    if any(answer.error for answer in figures.at_once) or math.isnan(ratio):
        return wall, f"{wall:.0f} s, failed", False
    return wall, f"{wall:.0f} s = {ratio:.1f}x", ratio <= GOAL_AT_ONCE


def memory_cell(figures: Figures) -> Cell:
    memory = figures.memory
    mib = memory.model_mib
    size = f"{mib:.0f} MiB" if memory.engine_pid else f"+{mib:.0f} MiB"
    copies = f"{memory.copies} cop{'y' if memory.copies == 1 else 'ies'}"
    return mib, f"{copies}, {size}", memory.copies == 1


ROWS: tuple[tuple[str, Callable[[Figures], Cell], str], ...] = (
    ("1. photo -> EN+TH, median total", photo_cell, f"<= {GOAL_PHOTO:.0f} s"),
    ("2. first English words, median", first_words_cell, f"<= {GOAL_FIRST_WORDS:.0f} s"),
    ("3. 10 s speech video -> EN+TH", video_cell, f"<= {GOAL_VIDEO:.0f} s"),
    ("4. 4 photos at once, wall / alone", at_once_cell, f"<= {GOAL_AT_ONCE}x"),
    ("5. model copies in memory, RSS", memory_cell, "one copy"),
)


def ratio_text(before: Cell | None, after: Cell | None) -> str:
    """after / before, when both pipelines measured the figure."""
    if before is None or after is None or not before[0] or not after[0]:
        return "-"
    ratio = after[0] / before[0]
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "-"


def met_text(cell: Cell | None) -> str:
    """yes / no for a cell's goal; "-" when it was not measured."""
    if cell is None or cell[2] is None:
        return "-"
    return "yes" if cell[2] else "no"


def print_table(figures: dict[str, Figures]) -> None:
    """The five measures: before | after | after/before | goal | met? (before, after)."""
    print(
        f"\n{'measure':<36}{'before':>20}{'after':>20}{'after/before':>14}  {'goal':<10}met? (before, after)"
    )
    for label, cell_of, goal in ROWS:
        before, after = (cell_of(figures[p]) if p in figures else None for p in PIPELINES)
        print(
            f"{label:<36}{before[1] if before else '-':>20}{after[1] if after else '-':>20}"
            f"{ratio_text(before, after):>14}  {goal:<10}{met_text(before)}, {met_text(after)}"
        )


def answer_line(label: str, answer: Answer) -> str:
    """One answer's timings, Thai script share and warnings."""
    if answer.error:
        return f"  {label} {answer.media}: FAILED after {answer.elapsed:.1f} s: {answer.error}"
    share = thai_share(answer.thai)
    warnings = "; ".join(answer.warnings) or "none"
    return (
        f"  {label} {answer.media}: total {answer.total:.1f} s; from the upload's end: English "
        f"{answer.first_words:.1f}-{answer.last_words:.1f} s, translating from "
        f"{answer.translating:.1f} s, Thai from {answer.first_thai:.1f} s; "
        f"tokens {answer.input_tokens} in, {answer.output_tokens} out; Thai script {share:.0%} (>= 95 %: {'yes' if share >= GOAL_THAI_SHARE else 'NO'}); "
        f"warnings: {warnings}"
    )


def memory_lines(memory: Memory) -> list[str]:
    """The memory figures in full."""
    grown, at_load = memory.bench_growth, memory.bench_growth_at_load
    lines = [
        f"  this process: {memory.in_process} LlamaChat; its RSS grew {at_load['VmRSS']:+.0f} MiB "
        f"by the models' loading and {grown['VmRSS']:+.0f} MiB by the end "
        f"(anonymous {grown['RssAnon']:+.0f}, file-backed {grown['RssFile']:+.0f})"
    ]
    if memory.engine_pid:
        end = memory.engine_at_end
        lines.append(
            f"  engine: 1 process (pid {memory.engine_pid}, {memory.engine_children} child "
            f"processes), RSS {memory.engine_at_load['VmRSS']:.0f} MiB after loading, "
            f"{end['VmRSS']:.0f} MiB at the end (anonymous {end['RssAnon']:.0f}, "
            f"file-backed {end['RssFile']:.0f})"
        )
    return lines


def print_details(figures: Figures) -> None:
    """Each answer of one pipeline, its memory, and the first words of one story."""
    print(f"\n{figures.pipeline}: {DESCRIPTIONS[figures.pipeline]}; model {figures.model}")
    print(answer_line("warm-up (not counted)", figures.warm_up))
    for number, answer in enumerate(figures.singles, 1):
        print(answer_line(f"photo run {number}", answer))
    if figures.video:
        print(answer_line("video", figures.video))
    for answer in figures.at_once:
        print(answer_line("at once", answer))
    for line in memory_lines(figures.memory):
        print(line)
    answered = [answer for answer in (*figures.singles, figures.warm_up) if not answer.error]
    if answered:
        print(f"  English, first {PREVIEW} characters: {answered[0].english[:PREVIEW]!r}")
        print(f"  Thai, first {PREVIEW} characters: {answered[0].thai[:PREVIEW]!r}")
    else:
        print("  no photo was answered: no story to show")


def save_answers(path: Path, figures: dict[str, Figures]) -> None:
    """Every answer of every pipeline, as JSON at `path`: which run, the media, the
    seconds, the English, the Thai and the warnings."""
    rows = []
    for result in figures.values():
        labelled = [("warm-up", result.warm_up)]
        labelled += [(f"photo run {n}", a) for n, a in enumerate(result.singles, 1)]
        labelled += [("video", result.video)] if result.video else []
        labelled += [("at once", a) for a in result.at_once]
        for label, answer in labelled:
            rows.append(
                {
                    "pipeline": result.pipeline,
                    "run": label,
                    "media": answer.media,
                    "seconds": None if math.isnan(answer.total) else round(answer.total, 1),
                    "english": answer.english,
                    "thai": answer.thai,
                    "warnings": answer.warnings,
                    "tokens": [answer.input_tokens, answer.output_tokens],
                    "error": answer.error,
                }
            )
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"answers written to {path}")
