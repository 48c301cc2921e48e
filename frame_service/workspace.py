"""Where uploads are worked on: one temporary directory per request, and the sweep of leftovers.

Each request's directory is removed when the request ends, however it ends. A process
that is killed cannot remove its own; the next one to start sweeps what is older
than any request can be.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

WORK_PREFIX = "imgstory-frames-"
# Far longer than any request may take (the gateway waits 120 s by default).
LEFTOVER_AGE = 3600.0


def request_dir(work_dir: str | None) -> tempfile.TemporaryDirectory[str]:
    """A new directory for one request's files under work_dir (None: the system's temp)."""
    return tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=work_dir)


def sweep_leftovers(work_dir: str | None, older_than: float = LEFTOVER_AGE) -> int:
    """Remove request directories last changed more than older_than seconds ago; how many.

    Only directories named like ours are touched; a failure to remove one is logged.
    """
    folder = Path(work_dir or tempfile.gettempdir())
    cutoff = time.time() - older_than
    swept = 0
    for path in folder.glob(f"{WORK_PREFIX}*"):
        try:
            if path.is_symlink() or not path.is_dir() or path.stat().st_mtime >= cutoff:
                continue
            shutil.rmtree(path)
        except FileNotFoundError:
            continue  # another replica sharing the directory swept it first
        except OSError as err:
            log.warning("could not remove the leftover work directory %s: %s", path, err)
            continue
        swept += 1
    if swept:
        log.info("swept %d work directory(ies) an earlier run left in %s", swept, folder)
    return swept
