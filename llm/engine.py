"""The offline default's engine: llama.cpp's own llama-server, one for every service.

`python -m llm.engine` runs it in the foreground with the bundled model (or
IMGSTORY_LOCAL_MODEL); `make run` starts it beside NATS and compose runs it as a
service. The story and translation services reach it at IMGSTORY_LOCAL_SERVER_URL
through the OpenAI-compatible client (llm.llama_server), so the offline default takes
the code path of every other provider. Its slots decode concurrent requests together
(continuous batching), which on a CPU costs little more than one request alone.

`make engine` builds the binary from the llama.cpp sources that the pinned
llama-cpp-python sdist vendors (scripts/build-llama-server.sh).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bus.settings import Env, SettingsError
from llm.llama_chat import default_threads
from llm.llama_server import server_root
from llm.local_model import default_model_path

log = logging.getLogger(__name__)

BINARY = "llama-server"


@dataclass(frozen=True)
class EngineSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    slots: int = 4  # requests decoded together
    context: int = 16384  # tokens of KV cache, shared by all slots
    threads: int | None = None  # None: one per core
    model: str | None = None  # a GGUF path; None: the bundled model
    mmproj: str | None = None  # a vision projector GGUF for `model`

    @property
    def url(self) -> str:
        """The OpenAI-compatible API's base URL, for IMGSTORY_LOCAL_SERVER_URL."""
        return f"http://{self.host}:{self.port}/v1"


def load(env: Mapping[str, str] = os.environ) -> EngineSettings:
    """Engine settings from the environment (see docs/configuration.md). Raises SettingsError."""
    read = Env(env)
    settings = EngineSettings(
        host=read.text("IMGSTORY_ENGINE_HOST", EngineSettings.host),
        port=read.integer("IMGSTORY_ENGINE_PORT", EngineSettings.port, minimum=1, maximum=65535),
        slots=read.integer("IMGSTORY_ENGINE_SLOTS", EngineSettings.slots, minimum=1, maximum=64),
        context=read.integer("IMGSTORY_ENGINE_CONTEXT", EngineSettings.context, minimum=512),
        threads=read.integer("IMGSTORY_LOCAL_THREADS", 0, minimum=0) or None,
        model=read.optional("IMGSTORY_LOCAL_MODEL"),
        mmproj=read.optional("IMGSTORY_LOCAL_MMPROJ"),
    )
    if settings.mmproj and not settings.model:
        raise SettingsError("IMGSTORY_LOCAL_MMPROJ needs IMGSTORY_LOCAL_MODEL (the matching GGUF)")
    return settings


def binary_path() -> Path:
    """The llama-server `make engine` built (beside this Python), else one on PATH."""
    beside = Path(sys.executable).parent / BINARY
    if beside.is_file():
        return beside
    found = shutil.which(BINARY)
    if found is None:
        raise FileNotFoundError(f"{BINARY} is not built: run `make engine`")
    return Path(found)


def command(settings: EngineSettings, binary: Path | None = None) -> list[str]:
    """The llama-server command line for `settings`."""
    model = Path(settings.model) if settings.model else default_model_path()
    threads = settings.threads or default_threads()
    args = [
        str(binary or binary_path()),
        "--model", str(model),
        # Answers name the model by this, not by its path on the server.
        "--alias", model.name.removesuffix(".gguf"),
        "--host", settings.host,
        "--port", str(settings.port),
        "--parallel", str(settings.slots),
        # One KV cache for all slots: a long request may use what idle slots do not.
        "--ctx-size", str(settings.context),
        "--kv-unified",
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--no-webui",
        "--metrics",
        "--no-slots",  # the slots endpoint would show every prompt
    ]  # fmt: skip
    if settings.mmproj:
        args += ["--mmproj", settings.mmproj]
    return args


def ready(url: str) -> bool:
    """Whether the engine at `url` (its /v1 base URL) has loaded its model."""
    try:
        with urllib.request.urlopen(f"{server_root(url)}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def start(
    settings: EngineSettings, *, wait: float = 120.0, log_file: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start llama-server for `settings` and return once it serves (within `wait` s).

    Its output goes to `log_file` (else this process's stderr). Raises RuntimeError
    when it exits or does not get ready in time (it is stopped then).
    """
    args = command(settings)
    output = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115  # the child keeps it
    process = subprocess.Popen(args, stdout=output or sys.stderr, stderr=subprocess.STDOUT)
    if output is not None:
        output.close()
    deadline = time.monotonic() + wait
    while not ready(settings.url):
        if process.poll() is not None:
            raise RuntimeError(f"{BINARY} exited with code {process.returncode} while starting")
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{BINARY} did not get ready within {wait:.0f} s")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop the engine: SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine in the foreground (replacing this process); extra arguments go to llama-server."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load()
        args = command(settings) + list(sys.argv[1:] if argv is None else argv)
    except (SettingsError, FileNotFoundError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    log.info("starting %s on %s", BINARY, settings.url)
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main())
