"""llama-server (the offline default's engine) on a free port, for the benchmarks and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack.processes import ProcessGroup, free_port
from llm import engine
from llm.engine import EngineSettings


@contextmanager
def running_engine(model: Path, log_dir: Path, **options: Any) -> Iterator[EngineSettings]:
    """llama-server serving `model` on a free port, its log in `log_dir`; stopped on leaving.

    `options` are further EngineSettings. Raises RuntimeError if it does not get ready.
    """
    settings = EngineSettings(port=free_port(), model=str(model), **options)
    with ProcessGroup(grace=10) as group:
        group.adopt("llama-server", engine.start(settings, log_file=log_dir / "engine.log"))
        yield settings
