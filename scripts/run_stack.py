"""`make run`: NATS (if none answers at NATS_URL), the local model engine (when a service
uses the offline default), the three services and the gateway.

Every process runs until Ctrl-C (or SIGTERM); if one dies, the rest are stopped too: the
services and the gateway first, then the engine, then NATS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.nats_server import NatsServer  # noqa: E402  # needs ROOT on the path
from devstack.processes import ProcessGroup  # noqa: E402
from llm import engine  # noqa: E402
from llm.provider import model_settings  # noqa: E402

SERVICES = ["frame_service", "story_service", "translation_service", "gateway"]

log = logging.getLogger("imgstory.run")


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start_nats(url: str) -> NatsServer | None:
    """Start a local nats-server with JetStream unless one already answers at ``url``."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    if answers(host, port):
        log.info("using the NATS server at %s", url)
        return None
    store = ROOT / ".cache" / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log.info("starting nats-server on %s:%d (store %s)", host, port, store)
    try:
        return NatsServer(store, port, host=host, log_to=sys.stderr).start()
    except FileNotFoundError:
        sys.exit(f"no NATS server answers at {url} and nats-server is not installed")
    except RuntimeError:
        sys.exit("nats-server did not start")


def start_engine(group: ProcessGroup) -> None:
    """Start llama-server in `group` when a model service uses the offline default and no
    engine is named in IMGSTORY_LOCAL_SERVER_URL; the services are pointed at it."""
    wanted = [
        model_settings(os.environ, variable)
        for variable in ("IMGSTORY_STORY_MODEL", "IMGSTORY_TRANSLATION_MODEL")
    ]
    if not any(settings.queues_calls for settings in wanted):
        return
    settings = engine.load()
    log_file = ROOT / ".cache" / "engine.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting the local model engine on %s (log: %s)", settings.url, log_file)
    try:
        group.adopt("engine", engine.start(settings, log_file=log_file))
    except (RuntimeError, FileNotFoundError) as err:
        sys.exit(f"the local model engine did not start: {err} (see {log_file})")
    os.environ["IMGSTORY_LOCAL_SERVER_URL"] = settings.url


class Stopping:
    """Asked for by Ctrl-C or SIGTERM, from its creation on."""

    def __init__(self) -> None:
        self.asked = False
        signal.signal(signal.SIGINT, self.ask)
        signal.signal(signal.SIGTERM, self.ask)

    def ask(self, *_: object) -> None:
        self.asked = True


def watch(services: ProcessGroup, engines: ProcessGroup, stopping: Stopping) -> int:
    """Wait until a stop is asked for (then 0) or a service or the engine exits (then 1)."""
    code = 0
    while not stopping.asked:
        for module, exit_code in services.exited().items():
            log.error("%s exited with code %s; stopping the rest", module, exit_code)
            stopping.asked, code = True, 1
        for exit_code in engines.exited().values():
            log.error("the local model engine exited with code %s", exit_code)
            stopping.asked, code = True, 1
        time.sleep(0.5)
    return code


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = os.environ.setdefault("NATS_URL", "nats://127.0.0.1:4222")
    # llama.cpp's OpenMP threads spin while idle; two model processes share these cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Leaving the block stops the groups in the reverse order: the services and the
    # gateway first (they drain through NATS and may wait on the engine), then the
    # engine, then NATS.
    with contextlib.ExitStack() as stack:
        nats_server = start_nats(url)
        if nats_server is not None:
            stack.callback(nats_server.stop)
        engines = stack.enter_context(ProcessGroup(grace=10))
        start_engine(engines)
        stopping = Stopping()
        services = stack.enter_context(ProcessGroup(grace=15))
        for module in SERVICES:
            services.python(module, module)
        port = os.environ.get("IMGSTORY_PORT", "8000")
        log.info("ImgStory is starting on http://localhost:%s (Ctrl-C stops everything)", port)
        return watch(services, engines, stopping)


if __name__ == "__main__":
    sys.exit(main())
