"""`make run`: NATS (if none answers at NATS_URL), the local model engine (when a service
uses the offline default), the three services and the gateway.

Every process runs until Ctrl-C (or SIGTERM); if one dies, the rest are stopped too.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm import engine  # noqa: E402  # needs ROOT on the path
from llm.provider import model_settings  # noqa: E402

SERVICES = ["frame_service", "story_service", "translation_service", "gateway"]

log = logging.getLogger("imgstory.run")


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start_nats(url: str) -> subprocess.Popen | None:
    """Start a local nats-server with JetStream unless one already answers at ``url``."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    if answers(host, port):
        log.info("using the NATS server at %s", url)
        return None
    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit(f"no NATS server answers at {url} and nats-server is not installed")
    store = ROOT / ".cache" / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log.info("starting nats-server on %s:%d (store %s)", host, port, store)
    process = subprocess.Popen([binary, "-js", "-a", host, "-p", str(port), "-sd", str(store)])
    deadline = time.monotonic() + 15
    while not answers(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit("nats-server did not start")
        time.sleep(0.1)
    return process


def start_engine() -> subprocess.Popen[bytes] | None:
    """Start llama-server when a model service uses the offline default and no engine
    is named in IMGSTORY_LOCAL_SERVER_URL; the services are pointed at it."""
    wanted = [
        model_settings(os.environ, variable)
        for variable in ("IMGSTORY_STORY_MODEL", "IMGSTORY_TRANSLATION_MODEL")
    ]
    if not any(settings.queues_calls for settings in wanted):
        return None
    settings = engine.load()
    log_file = ROOT / ".cache" / "engine.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting the local model engine on %s (log: %s)", settings.url, log_file)
    try:
        process = engine.start(settings, log_file=log_file)
    except (RuntimeError, FileNotFoundError) as err:
        sys.exit(f"the local model engine did not start: {err} (see {log_file})")
    os.environ["IMGSTORY_LOCAL_SERVER_URL"] = settings.url
    return process


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = os.environ.setdefault("NATS_URL", "nats://127.0.0.1:4222")
    # llama.cpp's OpenMP threads spin while idle; two model processes share these cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    processes: list[subprocess.Popen] = []
    nats_process = start_nats(url)
    engine_process = start_engine()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for module in SERVICES:
        processes.append(subprocess.Popen([sys.executable, "-m", module], cwd=ROOT))
    port = os.environ.get("IMGSTORY_PORT", "8000")
    log.info("ImgStory is starting on http://localhost:%s (Ctrl-C stops everything)", port)
    code = 0
    while not stopping:
        for module, process in zip(SERVICES, processes, strict=True):
            if process.poll() is not None:
                log.error("%s exited with code %s; stopping the rest", module, process.returncode)
                stopping, code = True, 1
        if engine_process is not None and engine_process.poll() is not None:
            log.error("the local model engine exited with code %s", engine_process.returncode)
            stopping, code = True, 1
        time.sleep(0.5)
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
    if engine_process is not None:
        engine.stop(engine_process)
    if nats_process is not None:
        nats_process.terminate()
        nats_process.wait(10)
    return code


if __name__ == "__main__":
    sys.exit(main())
