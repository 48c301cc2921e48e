"""What bench.jobs measured, the floor it is held against, and its printout."""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import config as gateway_config
from story_service import config as story_config
from translation_service import config as translation_config

ADDED_GOAL_MS = 10.0  # issue 17: what running as a job may add to a synchronous request


@dataclass
class Side:
    """One stack's synchronous figures: requests alone, by photo, and the concurrent burst."""

    name: str
    alone: dict[str, list[float]] = field(default_factory=dict)  # ms: wall - provider time
    frames: dict[str, list[float]] = field(default_factory=dict)  # ms: timings_ms.frames
    concurrent: dict[str, float] = field(default_factory=dict)


@dataclass
class Burst:
    """One burst of POST /jobs and what became of each job."""

    kind: str
    photo_bytes: int
    jobs: int
    alone: list[float] = field(default_factory=list)  # seconds, one submitted alone
    submits: list[float] = field(default_factory=list)  # seconds, each 202 of the burst
    refused: Counter[int] = field(default_factory=Counter)  # other answers (0: no connection)
    submit_wall: float = 0.0
    cpu_submitting: dict[str, float] = field(default_factory=dict)  # first sent -> last 202
    check_seconds: float = 0.0  # reading, replaying and deleting every job afterwards
    done_after: float | None = None  # first sent -> the last job's final status heard
    floor: float = 0.0
    floor_note: str = ""
    ended: Counter[str] = field(default_factory=Counter)  # final statuses heard
    unfinished: int = 0
    live_runs: Counter[int] = field(default_factory=Counter)  # `running` events a job: jobs
    live_results: Counter[int] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # GET /jobs/{id} after
    attempts: Counter[int] = field(default_factory=Counter)
    replayed_results: Counter[int] = field(default_factory=Counter)
    replayed_statuses: Counter[int] = field(default_factory=Counter)  # queued, running, end
    replay_ids_unique: bool = True
    waited: list[float] = field(default_factory=list)  # created -> started, seconds
    ran: list[float] = field(default_factory=list)  # started -> finished, seconds
    provider: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rss_idle: int | None = None  # KiB
    rss_peak: int | None = None
    rss_after: int | None = None
    rss_deleted: int | None = None
    nats_peak: int | None = None
    nats_deleted: int | None = None
    problems: Counter[str] = field(default_factory=Counter)  # the gateway's warnings, errors


def floor(env: dict[str, str], jobs: int, latency: float) -> tuple[float, str]:
    """The least time N jobs can take with the in-flight limits of ``env``: each job is
    two provider calls one after the other (its story, then its two paragraphs'
    translations side by side), and only so many jobs run at once."""
    workers = gateway_config.load(env).jobs.workers  # one gateway
    story = story_config.load(env).max_in_flight
    translations = translation_config.load(env).max_in_flight // 2
    at_once = min(workers, story, translations)
    note = (
        f"ceil({jobs} jobs / {at_once} at once) x 2 calls in a row x {latency:.1f} s; "
        f"{at_once} = min({workers} job workers x 1 gateway, {story} story calls in flight, "
        f"{translations * 2} translation calls in flight / 2 a job)"
    )
    return math.ceil(jobs / at_once) * 2 * latency, note


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value at least ``share`` of them are at or below."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f} MiB"


def _only(counter: Counter[Any], value: object, total: int) -> str:
    return f"{counter.get(value, 0)} of {total}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]) -> None:
    """Rows of: a label, figures right-aligned in ``widths`` (the label's first), a goal."""
    for row in [header, *rows]:
        cells = [f"{row[0]:<{widths[0]}}"]
        cells += [f"{cell:>{width}}" for cell, width in zip(row[1:-1], widths[1:], strict=True)]
        print("".join(cells) + "  " + row[-1])


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(latency: float, sides: list[Side], bursts: list[Burst]) -> None:
    load = os.getloadavg()[0]
    print(
        f"Durable jobs, provider latency {latency:.1f} s, {os.cpu_count()} cores, "
        f"load average at the end {load:.1f}"
    )
    print()
    report_sync(sides)
    if bursts:
        print()
        report_bursts(bursts)


def report_sync(sides: list[Side]) -> None:
    """The synchronous path per stack; with two, the baseline first and the difference."""
    compared = len(sides) == 2
    print("The synchronous path" + (", side by side in one run" if compared else ""))
    rows: list[tuple[str, ...]] = []
    for kind in ("small", "phone"):
        beyond = [median(side.alone.get(kind, [])) for side in sides]
        frames = [median(side.frames.get(kind, [])) for side in sides]
        count = len(sides[-1].alone.get(kind, []))
        added = beyond[-1] - beyond[0]
        goal = f"< +{ADDED_GOAL_MS:.0f} ms ({_verdict(added < ADDED_GOAL_MS)})"
        rows += [
            (f"POST /analyze/ alone, {kind} photo, p50 of {count}", *(f"{v:.0f} ms" for v in beyond), f"{added:+.0f} ms", goal),
            ("  of it the frame stage (timings_ms.frames)", *(f"{v:.0f} ms" for v in frames), "", ""),
        ]  # fmt: skip  # one figure a line reads as the table it prints
    walls = [side.concurrent["wall"] for side in sides]
    as_fast = _verdict(walls[-1] <= walls[0] * 1.1)
    rows += [
        ("32 at once (bench.concurrency), wall", *(f"{w:.1f} s" for w in walls), f"{walls[-1] / walls[0]:.2f}x", f"as fast as before ({as_fast})"),
        ("  answered 200", *(f"{s.concurrent['ok']:.0f}" for s in sides), "", ""),
        ("  provider calls in flight, most at once", *(f"{s.concurrent['in_flight']:.0f}" for s in sides), "", ""),
        ("  gateway CPU a request", *(f"{s.concurrent['gateway_ms']:.1f} ms" for s in sides), "", ""),
    ]  # fmt: skip  # one figure a line reads as the table it prints
    if not compared:
        rows = [(row[0], row[1], "") for row in rows]
    header = [
        "figure",
        *(side.name for side in sides),
        *(["difference"] if compared else []),
        "goal",
    ]
    _table(header, rows, [48, *(16 for _ in header[1:-1])])
    print(
        "p50 of client wall time minus the time the provider held a call (1 s x 2), one "
        "request alone; requests alternate between the stacks"
    )


def report_bursts(bursts: list[Burst]) -> None:
    heads = [f"{b.jobs} x {b.kind} photo {b.photo_bytes / 1e6:.2f} MB" for b in bursts]
    print(
        "POST /jobs all at once, one connection each; then every job read, its events "
        "replayed and deleted"
    )

    def each(make: Any) -> list[str]:
        return [make(b) for b in bursts]

    def done(b: Burst) -> str:
        return "not all" if b.done_after is None else f"{b.done_after:.1f} s"

    def ratio(b: Burst) -> str:
        return "" if b.done_after is None else f"{b.done_after / b.floor:.2f}x"

    def growth(b: Burst) -> str:
        if b.rss_peak is None or b.rss_idle is None:
            return "n/a"
        return f"{mib(b.rss_idle)} -> {mib(b.rss_peak)} (+{(b.rss_peak - b.rss_idle) / 1024:.0f})"

    def refused(b: Burst) -> str:
        return ", ".join(f"{n} x {s or 'no connection'}" for s, n in b.refused.items()) or "none"

    rows = [
        ("accepted (202)", *each(lambda b: f"{len(b.submits)} of {b.jobs}"), "all"),
        ("  refused", *each(refused), ""),
        ("submit latency p50 / p99", *each(lambda b: f"{median(b.submits) * 1000:.0f} / {percentile(b.submits, 0.99) * 1000:.0f} ms"), "stays fast"),
        ("  max", *each(lambda b: f"{max(b.submits, default=math.nan) * 1000:.0f} ms"), ""),
        ("  one submitted alone (median of 3)", *each(lambda b: f"{median(b.alone) * 1000:.0f} ms"), ""),
        ("  first sent -> last 202", *each(lambda b: f"{b.submit_wall:.1f} s"), ""),
        ("  submissions a second", *each(lambda b: f"{len(b.submits) / b.submit_wall:.0f}"), ""),
        ("  gateway CPU a submission (while submitting)", *each(lambda b: f"{b.cpu_submitting.get('gateway', 0.0) / b.jobs * 1000:.1f} ms"), ""),
        ("  nats-server CPU a submission", *each(lambda b: f"{b.cpu_submitting.get('nats-server', 0.0) / b.jobs * 1000:.1f} ms"), ""),
        ("  this client's CPU a submission", *each(lambda b: f"{b.cpu_submitting.get('benchmark client', 0.0) / b.jobs * 1000:.1f} ms"), ""),
        ("all done after (first sent -> last ended)", *each(done), "all finish"),
        ("  floor the in-flight limits allow", *each(lambda b: f"{b.floor:.1f} s"), ""),
        ("  ratio to the floor", *each(ratio), ""),
        ("  CPU all processes used / cores", *each(lambda b: f"{sum(b.cpu.values()) / (os.cpu_count() or 1):.1f} s"), ""),
        ("succeeded (none lost)", *each(lambda b: _only(b.statuses, "succeeded", b.jobs)), "all"),
        ("  ended otherwise / never heard to end", *each(lambda b: f"{sum(b.ended.values()) - b.ended['succeeded']} / {b.unfinished}"), "0 / 0"),
        ("attempts 1 (none run twice)", *each(lambda b: _only(b.attempts, 1, b.jobs)), "all"),
        ("  events replayed hold one `result`", *each(lambda b: _only(b.replayed_results, 1, b.jobs) + ("" if b.replay_ids_unique else ", ids repeated")), "all"),
        ("  events replayed hold 3 `status`", *each(lambda b: _only(b.replayed_statuses, 3, b.jobs)), "all"),
        ("  heard live: one `running`", *each(lambda b: _only(b.live_runs, 1, b.jobs)), "all"),
        ("  heard live: one `result`", *each(lambda b: _only(b.live_results, 1, b.jobs)), "all"),
        ("  provider calls a job (billed once)", *each(lambda b: f"{b.provider.get('chat_calls', 0) / b.jobs:.2f}"), "3.00"),
        ("provider calls in flight, most at once", *each(lambda b: f"{b.provider.get('max_in_flight', 0)}"), ""),
        ("job waited in the queue, p50 / max", *each(lambda b: f"{median(b.waited):.1f} / {max(b.waited, default=math.nan):.1f} s"), ""),
        ("job ran (started -> finished), p50 / p99", *each(lambda b: f"{median(b.ran) * 1000:.0f} / {percentile(b.ran, 0.99) * 1000:.0f} ms"), "2 calls: 2000 ms"),
        ("gateway RSS idle -> peak in the burst", *each(growth), "flat"),
        ("  after all ended / after deleting them", *each(lambda b: f"{mib(b.rss_after)} / {mib(b.rss_deleted)}"), ""),
        ("nats-server RSS peak / after deleting the jobs", *each(lambda b: f"{mib(b.nats_peak)} / {mib(b.nats_deleted)}"), ""),
        ("gateway CPU a job (submit + run)", *each(lambda b: f"{b.cpu.get('gateway', 0.0) / b.jobs * 1000:.1f} ms"), ""),
        ("all read, replayed and deleted in", *each(lambda b: f"{b.check_seconds:.1f} s"), ""),
    ]  # fmt: skip  # one figure a line reads as the table it prints
    _table(["figure", *heads, "goal"], rows, [48, *(26 for _ in heads)])
    for b in bursts:
        print(f"floor, {b.kind} photo: {b.floor_note}")
    print(
        "POST /jobs keeps every upload in the blob bucket (a kept job's media outlive the "
        "request); only the synchronous path's uploads up to 512 kB ride the queue message"
    )
    for b in bursts:
        for what, counter, expected in (
            ("attempts", b.attempts, 1),
            ("`result` events replayed", b.replayed_results, 1),
            ("`status` events replayed", b.replayed_statuses, 3),
            ("`running` events heard", b.live_runs, 1),
            ("`result` events heard", b.live_results, 1),
        ):
            odd = ", ".join(f"{n} job(s) {v}" for v, n in sorted(counter.items()) if v != expected)
            if odd:
                print(f"{b.kind}-photo jobs with {what} other than {expected}: {odd}")
        for problem, count in b.problems.most_common(8):
            print(f"gateway log, {b.kind}-photo burst: {count} x {problem[:300]}")
        if b.cpu:
            total = sum(b.cpu.values())
            busiest = ", ".join(
                f"{name} {seconds:.1f} s"
                for name, seconds in sorted(b.cpu.items(), key=lambda item: -item[1])[:4]
            )
            print(f"CPU in the {b.kind}-photo burst: {total:.0f} s in all; {busiest}")
