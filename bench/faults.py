"""Time each fault the request core must survive, on real parts, and show what was left.

The scenarios are the ones tests/test_faults.py asserts on (devstack/faults.py):
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
from typing import Any

from devstack import faults
from devstack.fake_openai import FakeOpenAI
from devstack.nats_server import NatsServer
from devstack.processes import free_port

Scenario = Callable[..., Awaitable[faults.Outcome]]

# (fault, what the seconds measure, scenario, its options)
SCENARIOS: list[tuple[str, str, Scenario, dict[str, Any]]] = [
    ("story replica killed holding 4 requests", "kill -> last answer", faults.killed_replica, {"held": 4}),
    ("only story replica killed", "kill -> answer", faults.no_replica_left, {}),
    ("provider slower than the 2 s story patience", "send -> answer", faults.deadline_passed, {"patience": 2.0}),
    ("client leaves a POST mid-story", "leave -> work stopped", faults.client_leaves, {}),
    ("event stream closed while uploading", "close -> all clean", faults.stream_closed, {"closed_at": "uploading"}),
    ("event stream closed mid-story", "close -> all clean", faults.stream_closed, {"closed_at": "writing_story"}),
    ("gateway told to stop (SIGTERM) mid-request", "signal -> answer", faults.gateway_stopped, {}),
    ("NATS down for a request, then back", "send -> answer", faults.nats_outage, {}),
]  # fmt: skip  # one scenario a line reads as the table it prints


async def run(scenario: Scenario, options: dict[str, Any]) -> faults.Outcome:
    with tempfile.TemporaryDirectory(prefix="imgstory-bench-faults-") as tmp:
        uploads = Path(tmp) / "uploads"
        uploads.mkdir()
        with NatsServer(Path(tmp) / "nats", port=free_port()) as bus, FakeOpenAI() as fake:
            # The outage scenario stops and restarts the server itself.
            where = bus if scenario is faults.nats_outage else bus.url
            return await scenario(where, fake, uploads, **options)


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
    for name, measured, scenario, options in SCENARIOS:
        outcome = await run(scenario, options)
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
