"""Time each fault the request core must survive, on real parts, and show what was left.

The scenarios are the ones tests/test_faults.py asserts on (tests/support/faults.py):
a story replica killed holding 4 requests while another serves, the only replica
killed, a provider slower than the gateway's patience, a client that leaves, an event
stream closed at upload and mid-story, and NATS stopped and restarted. Each runs on its
own nats-server, with the story "provider" a fake OpenAI server that sits on calls.

Run: make bench-faults   (or: .venv/bin/python -m bench.faults)
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.support import faults
from tests.support.fake_openai import FakeOpenAI
from tests.support.nats_server import NatsServer
from tests.support.processes import free_port

Scenario = Callable[[NatsServer, FakeOpenAI, Path], Awaitable[faults.Outcome]]

SCENARIOS: list[tuple[str, str, Scenario]] = [
    (
        "story replica killed holding 4 requests",
        "kill -> last answer",
        lambda bus, fake, uploads: faults.killed_replica(bus.url, fake, uploads, held=4),
    ),
    (
        "only story replica killed",
        "kill -> answer",
        lambda bus, fake, uploads: faults.no_replica_left(bus.url, fake, uploads),
    ),
    (
        "provider slower than the 2 s story patience",
        "send -> answer",
        lambda bus, fake, uploads: faults.deadline_passed(bus.url, fake, uploads, patience=2.0),
    ),
    (
        "client leaves a POST mid-story",
        "leave -> work stopped",
        lambda bus, fake, uploads: faults.client_leaves(bus.url, fake, uploads),
    ),
    (
        "event stream closed while uploading",
        "close -> all clean",
        lambda bus, fake, uploads: faults.stream_closed(bus.url, fake, uploads, "uploading"),
    ),
    (
        "event stream closed mid-story",
        "close -> all clean",
        lambda bus, fake, uploads: faults.stream_closed(bus.url, fake, uploads, "writing_story"),
    ),
    (
        "NATS down for a request, then back",
        "send -> answer",
        lambda bus, fake, uploads: faults.nats_outage(bus, fake, uploads),
    ),
]


async def run(name: str, scenario: Scenario) -> faults.Outcome:
    with tempfile.TemporaryDirectory(prefix="imgstory-bench-faults-") as tmp:
        uploads = Path(tmp) / "uploads"
        uploads.mkdir()
        bus = NatsServer(Path(tmp) / "nats", port=free_port()).start()
        try:
            with FakeOpenAI() as fake:
                return await scenario(bus, fake, uploads)
        finally:
            bus.stop()


def describe(outcome: faults.Outcome) -> str:
    answers = ", ".join(str(s) for s in outcome.statuses) or "(client gone)"
    extra = ""
    if "ready_after" in outcome.notes:
        extra = f"; ready again {outcome.notes['ready_after']:.1f} s after NATS returned"
    if "dropped_after" in outcome.notes:
        extra = f"; the replica let go after {outcome.notes['dropped_after']:.1f} s"
    return f"{answers}{extra}"


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    print(f"{'fault':<46}{'measured':<24}{'seconds':>8}  {'left behind':<14}answers")
    for name, measured, scenario in SCENARIOS:
        outcome = await run(name, scenario)
        left = len(outcome.left_objects) + len(outcome.left_files)
        print(
            f"{name:<46}{measured:<24}{outcome.seconds:>8.2f}  "
            f"{'nothing' if left == 0 else f'{left} item(s)':<14}{describe(outcome)}"
        )
    print(
        f"(the fake provider sits {faults.SLOW:.0f} s on each story call while the fault happens)"
    )


if __name__ == "__main__":
    asyncio.run(main())
