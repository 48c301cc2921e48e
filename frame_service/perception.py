"""Perception: measures what a picture shows, for story models that cannot see it.

The story model is text-only, so these measured facts are all it knows of a picture.
Every fact is a measurement that can be wrong, and says how sure it is where it can:
ImageNet has no "person" class and names the astronaut photo "bobsled" (0.2), so the
story writer must treat low confidences as guesses. The measurements live in
classifier.py, faces.py, colours.py and ocr.py; where and when a photo was taken is
capture.py's.
"""

import threading
from dataclasses import dataclass

from PIL import Image

from frame_service.cancellation import CancelToken
from frame_service.classifier import CLASS_COUNT, Classifier, Label
from frame_service.colours import measure_look
from frame_service.faces import FaceCounter
from frame_service.ocr import find_tesseract, read_text


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
        if not 1 <= top_k <= CLASS_COUNT:
            raise ValueError(f"top_k must be between 1 and {CLASS_COUNT}")
        self._top_k = top_k
        self._classifier = Classifier()
        self._faces = FaceCounter()
        self._tesseract = find_tesseract() if ocr else None
        self._lock = threading.Lock()

    def describe(self, image: Image.Image, cancel: CancelToken | None = None) -> Facts:
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
        Raises ValueError if the image has no pixels; Cancelled once cancel is set,
        between measurements (OCR is stopped at once).
        """
        if image.width < 1 or image.height < 1:
            raise ValueError("the image has no pixels")
        cancel = cancel or CancelToken()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        with self._lock:
            cancel.check()  # the model may have been busy with other calls meanwhile
            labels, people_likely = self._classifier.classify(rgb, self._top_k)
            faces = self._faces.count(rgb)
        look = measure_look(rgb)
        cancel.check()
        text = read_text(rgb, self._tesseract, cancel) if self._tesseract is not None else None
        return Facts(
            labels=labels,
            faces=faces,
            people_hint=bool(faces) or people_likely,
            colors=look.colors,
            brightness=look.brightness,
            light=look.light,
            text=text,
        )
