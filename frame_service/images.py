"""Photos to pictures: Pillow decodes, orients, converts to RGB and re-encodes without metadata.

JPEG, PNG, WebP, GIF and AVIF are Pillow's own decoders. Most HEICs are decoded by
FFmpeg tile by tile straight to the size sent (heic.py); the rest by pillow-heif (libheif
with libde265). Both apply the file's rotation and mirroring (``irot``, ``imir``) and
bring 10- and 12-bit pictures down to 8 bits. Wide-gamut
pictures (an ICC profile or HEIF colour primaries other than sRGB's) are brought to sRGB
once reduced (colour_spaces.py).
"""

import io
import logging
import os

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from frame_service.cancellation import CancelToken
from frame_service.colour_spaces import source_profile, to_srgb
from frame_service.frames import FrameBounds, MediaError, Picture
from frame_service.heic import decode_heic

log = logging.getLogger(__name__)

# HEIF's primary image only (a burst, depth map or stereo pair has others; their
# thumbnails are not decoded). pillow-heif's opener decodes at 8 bits a sample and
# applies the file's transformations once, then reports its EXIF orientation as
# upright, so exif_transpose does not turn it again.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

# Restricting Pillow to these plugins means hostile files never reach the
# dozens of rarely used decoders Pillow ships.
IMAGE_PLUGINS = ("JPEG", "PNG", "WEBP", "GIF", "AVIF", "HEIF")
# Phone cameras write JPEGs with an MPF segment, which Pillow reports as "MPO".
_ACCEPTED_IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "AVIF", "HEIF"})
IMAGE_FORMATS = "JPEG, PNG, HEIC, HEIF, AVIF, WebP or GIF"
_DRAFTABLE_FORMATS = frozenset({"JPEG", "MPO"})
# Pillow can only resample these modes properly; palette, bilevel and 16-bit
# images are converted to RGB before resizing instead.
_RESIZABLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})
# Bytes per pixel Pillow stores in memory: one for these, two for 16-bit grey,
# four for everything else (RGB included, padded to four).
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
# Pillow's advice: box-reduce to within this factor of the target, then resample.
_REDUCING_GAP = 3.0
# Pictures that must change mode first are converted this many pixels at a time,
# so the four-byte copies the conversion makes stay small.
_STRIP_PIXELS = 1 << 20
# Everything Pillow might raise for damaged image data once the file has been opened.
_CORRUPT_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def prepare_image(
    path: str | os.PathLike[str], bounds: FrameBounds, cancel: CancelToken | None = None
) -> Picture:
    """Decode a photo, apply its orientation, and re-encode it within bounds.

    Raises MediaError if the file is not one of IMAGE_FORMATS, is corrupt or truncated, has
    more pixels than bounds.max_pixels (or than Pillow's decompression-bomb limit) or
    would take more memory than bounds.max_decoded_mb; Cancelled once cancel is set
    (checked before decoding and between strips of a conversion).
    Raises OSError if the file itself cannot be opened.
    """
    # Opened here rather than by Pillow so a missing file stays an OSError (a
    # server fault) instead of being reported as a bad upload.
    with open(path, "rb") as fh:
        # Most HEICs are decoded straight to the target size (heic.py); others by Pillow.
        reduced = decode_heic(fh, bounds, cancel or CancelToken())
        if reduced is not None:
            return to_picture(reduced, reduced.size, bounds.jpeg_quality, cancel=cancel)
        try:
            with Image.open(fh, formats=IMAGE_PLUGINS) as img:
                return _prepare_opened(img, bounds, cancel or CancelToken())
        except Image.DecompressionBombError as err:
            log.info("Pillow refused a decompression bomb: %s", err)
            raise MediaError("the image is too large to decode safely") from err
        except UnidentifiedImageError as err:
            raise MediaError(f"the file is not a {IMAGE_FORMATS} image") from err
        except _CORRUPT_IMAGE_ERRORS as err:
            # Pillow's words describe its decoder's state; the client gets ours.
            log.info("Pillow cannot decode the image: %s", err)
            raise MediaError("the image is corrupt or truncated") from err


def to_picture(
    img: Image.Image,
    size: tuple[int, int],
    quality: int,
    timestamp: float | None = None,
    cancel: CancelToken | None = None,
) -> Picture:
    """Convert to RGB, downscale to size, bring to sRGB and encode as a metadata-free
    baseline JPEG."""
    # Read first: the conversions below make pictures without img's info.
    profile = source_profile(img.info)
    # The region of img to resample: all of it, in reduced pixels once reduced.
    box = (0.0, 0.0, float(img.width), float(img.height))
    if _needs_conversion(img):
        across, down = _reduce_factor(img.size, size)
        box = (0.0, 0.0, img.width / across, img.height / down)
        img = _to_rgb_reduced(img, (across, down), cancel or CancelToken())
    if img.size != size:
        # reducing_gap lets Pillow box-reduce first, so huge images stay cheap.
        img = img.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)
    # Converted at the size sent, not the decoded size: a few ms for 960x720.
    img = to_srgb(to_rgb(img), profile)
    # resize/convert copy info, and Pillow writes info["comment"] back into the
    # JPEG; emptying it guarantees nothing from the upload travels upstream.
    img.info = {}
    buffer = io.BytesIO()
    img.save(
        buffer,
        format="JPEG",
        quality=quality,
        optimize=True,
        progressive=False,
        exif=b"",
        icc_profile=None,
    )
    return Picture(jpeg=buffer.getvalue(), width=img.width, height=img.height, timestamp=timestamp)


def _prepare_opened(img: Image.Image, bounds: FrameBounds, cancel: CancelToken) -> Picture:
    if img.format not in _ACCEPTED_IMAGE_FORMATS:
        raise MediaError(f"unsupported image format {img.format}; send {IMAGE_FORMATS}")
    width, height = img.size
    bounds.check_pixels(width, height, "image")
    target = bounds.fit_size(width, height)
    if img.format in _DRAFTABLE_FORMATS:
        # Lets libjpeg decode at 1/2, 1/4 or 1/8 scale, never below target.
        img.draft("RGB", target)
    # Nothing is decoded yet: the header (and the draft scale) tell what it will cost.
    bounds.check_memory(_decoding_bytes(img, target), width, height)
    cancel.check()
    # In place: the copy exif_transpose would otherwise make can be 100+ MB.
    ImageOps.exif_transpose(img, in_place=True)
    if (img.width > img.height) != (target[0] > target[1]):
        # The EXIF orientation swapped the axes; the bounds are symmetric, so
        # the target simply swaps too.
        target = (target[1], target[0])
    return to_picture(img, target, bounds.jpeg_quality, cancel=cancel)


def _needs_conversion(img: Image.Image) -> bool:
    return img.mode not in _RESIZABLE_MODES or "transparency" in img.info


def _reduce_factor(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The box reduction Pillow's resize would make first (what reducing_gap asks for)."""
    return (
        max(1, int(size[0] / target[0] / _REDUCING_GAP)),
        max(1, int(size[1] / target[1] / _REDUCING_GAP)),
    )


def _decoding_bytes(img: Image.Image, target: tuple[int, int]) -> int:
    """Memory the decoded picture and its reduced working copy will take at once."""
    width, height = img.size
    if img.mode in _ONE_BYTE_MODES:
        depth = 1
    elif img.mode.startswith("I;16"):
        depth = 2
    else:
        depth = 4
    full = width * height * depth
    if img.format == "HEIF":
        # libheif decodes into its own buffer, which Pillow then copies: a 12 MP HEIC
        # raised the peak RSS by 97 MiB where its picture is 46 MiB.
        full *= 2
    across, down = _reduce_factor(img.size, target)
    if (across, down) == (1, 1) and not _needs_conversion(img):
        # Resampled straight to the target size: no working copy.
        return full
    # The reduced working copy is four bytes a pixel (RGB, RGBA or CMYK); a picture
    # that must change mode is converted at full size when it cannot be reduced.
    return full + -(-width // across) * -(-height // down) * 4


def _to_rgb_reduced(img: Image.Image, factor: tuple[int, int], cancel: CancelToken) -> Image.Image:
    """to_rgb, then Image.reduce by factor, a strip at a time.

    Converting a palette or 16-bit picture makes four-byte copies of it (RGBA to
    flatten transparency, then RGB); done whole, a 6000x6600 palette PNG took 660 MB.
    Strips are a multiple of the factor tall, so the result equals reducing the whole,
    which is what Pillow's resize does first with reducing_gap.
    """
    across, down = factor
    width, height = img.size
    img.load()
    reduced = Image.new("RGB", (-(-width // across), -(-height // down)))
    rows = down * max(1, _STRIP_PIXELS // (width * down))
    for top in range(0, height, rows):
        cancel.check()
        strip = to_rgb(img.crop((0, top, width, min(height, top + rows))))
        if factor != (1, 1):
            strip = strip.reduce(factor)
        reduced.paste(strip, (0, top // down))
    return reduced


def to_rgb(img: Image.Image) -> Image.Image:
    """img in RGB: 16-bit grey scaled to 8 bits, transparency flattened onto white."""
    if img.mode == "RGB":
        return img
    if img.mode == "I" or img.mode.startswith("I;16"):
        # Pillow clips 16-bit samples to 255 instead of scaling them, which turns
        # 16-bit greyscale PNGs white.
        img = img.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
