"""Frame extraction's shared types: the bounds every picture keeps, the pictures, the errors.

images.py turns photos into pictures, video.py turns videos into pictures (with the
frame choice of frame_choice.py and the decoding of decoding.py); both produce the
types defined here.
"""

from dataclasses import dataclass

_MB = 1 << 20


class MediaError(Exception):
    """The file is not a valid or supported image or video."""


class UnprocessableMedia(Exception):
    """The container is valid but holds nothing usable: no video stream or no decodable frame."""


@dataclass(frozen=True)
class FrameBounds:
    """Size, quality and safety limits for every picture produced.

    The default size is what a story model is charged for: 1920x1080 fits as 960x540,
    510 of gpt-4.1-mini's 32 px patches (826 image tokens), where 1365x768 cost 1,671.
    """

    max_side: int = 960
    short_side: int = 540
    jpeg_quality: int = 85
    max_pixels: int = 40_000_000
    # Memory one photo may take while it is decoded and converted, checked from its
    # header: a 43 kB PNG can declare 40 million pixels.
    max_decoded_mb: int = 192

    def __post_init__(self) -> None:
        if min(self.max_side, self.short_side, self.max_pixels, self.max_decoded_mb) < 1:
            raise ValueError("FrameBounds sizes must be positive")
        if not 1 <= self.jpeg_quality <= 95:
            # Pillow documents quality above 95 as wasteful and 0 as meaningless.
            raise ValueError("FrameBounds.jpeg_quality must be between 1 and 95")

    def check_pixels(self, width: int, height: int, what: str) -> None:
        """Raise MediaError if a width x height picture has more than max_pixels."""
        if width * height > self.max_pixels:
            raise MediaError(
                f"the {what} is {width}x{height} ({width * height} pixels), "
                f"more than the {self.max_pixels} allowed"
            )

    def check_memory(self, needed: int, width: int, height: int) -> None:
        """Raise MediaError if decoding a width x height photo needs more than max_decoded_mb."""
        if needed > self.max_decoded_mb * _MB:
            raise MediaError(
                f"the image is {width}x{height} and would need about {-(-needed // _MB)} MB "
                f"of memory to decode, more than the {self.max_decoded_mb} MB allowed"
            )

    def fit_size(self, width: int, height: int) -> tuple[int, int]:
        """The size a width x height picture is scaled down to; never scaled up."""
        scale = min(1.0, self.max_side / max(width, height), self.short_side / min(width, height))
        if scale >= 1.0:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))


# Video frames come in eights, so each costs less: 768x432 is 336 patches (544 tokens).
VIDEO_FRAME_BOUNDS = FrameBounds(max_side=768, short_side=432)


@dataclass(frozen=True)
class DecodeBudget:
    """How much decoding one video may cost; past it the video is UnprocessableMedia.

    A 0.6 MB MP4 (4K, ten minutes, one keyframe) made every late frame cost decoding
    all 17,600 before it: 85 s of a core. frames is checked against the container's
    index before decoding starts, and both limits again while decoding.
    """

    seconds: float = 20.0
    frames: int = 9000
    # An animated GIF or WebP is decoded whole, each frame in turn (every one is drawn
    # over the one before): at most this many million pixels in all, refused from its
    # header past that. Pillow decodes 50-100 a second on one core.
    megapixels: int = 1000

    def __post_init__(self) -> None:
        if not self.seconds > 0 or min(self.frames, self.megapixels) < 1:
            raise ValueError("DecodeBudget limits must be positive")


@dataclass(frozen=True)
class Picture:
    """One RGB baseline JPEG without any metadata, ready to send upstream."""

    jpeg: bytes
    width: int
    height: int
    timestamp: float | None = None


@dataclass(frozen=True)
class VideoMeta:
    """What the container says about a video; width and height are as displayed (rotated)."""

    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
