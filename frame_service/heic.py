"""A HEIC photo's primary image decoded straight to the size the model is sent.

HEVC has no draft mode: libheif (pillow-heif) decodes all 12 megapixels of a phone photo
and converts them to RGB before anything is scaled down. Here FFmpeg's HEVC decoder
(PyAV) decodes the tiles (an iPhone photo is a grid of 512x512 ones) and each is box-reduced
plane by plane as soon as it is decoded, by the largest power of two that keeps the
picture at least the target size, into small Y, Cb and Cr canvases; these are cropped,
resampled and converted to RGB at the target size, then turned by ``irot`` and ``imir``.
Half the CPU of the full decode, and a 200 MP grid's decoded memory stays small.

A file this module does not handle (AVIF, alpha, monochrome, tiles that differ, overlays,
wide-gamut colour without an ICC profile...) is left to pillow-heif: decode_heic
returns None. A truncated file is refused here, where libheif would show the missing tiles
grey.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

import av
import av.error
import numpy as np
from av.video.frame import VideoFrame
from av.video.plane import VideoPlane
from PIL import Image

from contracts.media import HEAD_BYTES, sniff
from contracts.messages import MediaKind
from frame_service.cancellation import CancelToken
from frame_service.frames import FrameBounds, MediaError
from frame_service.heif import (
    Clap,
    Grid,
    Heif,
    HeifError,
    HeifLimit,
    HeifTruncated,
    HvcC,
    Item,
    Nclx,
    parse,
    parse_grid,
)

log = logging.getLogger(__name__)

# The corrupt-file answer prepare_image gives for every format.
CORRUPT = "the image is corrupt or truncated"
# Limits the tile count before any is decoded (a 200 MP grid of 512x512 tiles has 763).
MAX_TILES = 1024
# Two cores: FFmpeg's frame threads decode two tiles at once.
DECODE_THREADS = 2
# FFmpeg's HEVC decoder with two threads, before its frames: peak RSS rose by 14 MB
# decoding a 12 MP grid, of which its frames and the canvases are 6.
_DECODER_BYTES = 8 << 20
# FFmpeg conceals damaged slices; "explode" makes a bitstream error an exception instead.
_ERROR_DETECTION = "crccheck+bitstream+buffer+explode"
# Pillow's own AVIF decoder reads these (ftyp major brands).
_AVIF_BRANDS = (b"avif", b"avis")
# Properties this module applies or may ignore; an essential one outside it falls back.
_KNOWN_PROPERTIES = frozenset({"hvcC", "ispe", "irot", "imir", "clap", "colr", "pixi"})
_CHROMA_SUBSAMPLING = {1: (2, 2), 2: (2, 1), 3: (1, 1)}
_CHROMA_NAMES = {1: "420", 2: "422", 3: "444"}
# H.273 matrix coefficients: Kr and Kb. 2 (unspecified) is read as BT.601, as libheif does.
_MATRICES = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 5: (0.299, 0.114), 6: (0.299, 0.114)}
_MATRICES[9] = (0.2627, 0.0593)  # BT.2020 non-constant luminance
# H.273 primaries the model's sRGB already is (BT.709) or that say nothing.
_SRGB_PRIMARIES = frozenset({1, 2})
# FFmpeg's AVColorRange: what an HEVC stream's VUI says of its range (0: nothing).
_LIMITED_RANGE, _FULL_RANGE = 1, 2
_ROTATIONS = {
    1: Image.Transpose.ROTATE_90,
    2: Image.Transpose.ROTATE_180,
    3: Image.Transpose.ROTATE_270,
}


class _Unsupported(Exception):
    """The file is valid, or may be, but is not one this module decodes."""


@dataclass(frozen=True)
class _Layout:
    """What to decode: rows x columns of tiles of one size and configuration."""

    tiles: list[Item]
    grid: Grid
    tile_size: tuple[int, int]
    hvcc: HvcC
    crop: tuple[float, float, float, float]  # the part shown (clap), in grid pixels
    turns: list[Image.Transpose]  # irot and imir, in the file's order
    colour: Nclx | None  # None: the HEVC stream's own (VUI), as libheif reads it
    icc: bytes | None

    @property
    def shown(self) -> tuple[int, int]:
        left, top, right, bottom = self.crop
        return round(right - left), round(bottom - top)


def decode_heic(fh: BinaryIO, bounds: FrameBounds, cancel: CancelToken) -> Image.Image | None:
    """A HEIC's primary image in RGB at bounds.fit_size, upright; None if not handled here.

    Reads fh from its start; when it returns None, fh is back at its start for Pillow.
    Raises MediaError if the file is truncated or corrupt, has more than MAX_TILES tiles
    or MAX_ITEMS items, or is over bounds' pixel or memory limits; Cancelled once cancel
    is set.
    """
    head = fh.read(HEAD_BYTES)
    if head[4:8] != b"ftyp" or sniff(head) != MediaKind.IMAGE or head[8:12] in _AVIF_BRANDS:
        fh.seek(0)
        return None
    try:
        heif = parse(head + fh.read())
        return _decode(heif, _layout(heif), bounds, cancel)
    except HeifTruncated as err:
        log.info("refusing the HEIF: %s", err)
        raise MediaError(CORRUPT) from err
    except HeifLimit as err:
        raise MediaError(str(err)) from err
    except (HeifError, _Unsupported) as err:
        # libheif reads more than this module does; it gives today's answer.
        log.info("decoding the HEIF with pillow-heif: %s", err)
    fh.seek(0)
    return None


def _layout(heif: Heif) -> _Layout:
    """The primary image's tiles, checked to be ones this module decodes.

    Raises _Unsupported for what pillow-heif should decode, HeifError for a malformed
    image and HeifLimit past MAX_TILES.
    """
    primary = heif.items[heif.primary]
    if any(_is_alpha(aux) for aux in heif.referring("auxl", primary.id)):
        raise _Unsupported("the image has an alpha channel")
    grid: Grid | None = None
    if primary.type == "grid":
        tiles, grid = _grid_tiles(heif, primary)
    elif primary.type == "hvc1":
        tiles, grid = [primary], None
    else:
        raise _Unsupported(f"the primary image is an item of type {primary.type!r}")
    for item in {id(tile): tile for tile in [primary, *tiles]}.values():
        _check_properties(item, primary)
    first = tiles[0]
    hvcc, tile_size = first.find("hvcC"), first.find("ispe")
    if not isinstance(hvcc, HvcC) or not isinstance(tile_size, tuple):
        raise HeifError("an HEVC image without its hvcC or ispe")
    if any((t.find("hvcC"), t.find("ispe")) != (hvcc, tile_size) for t in tiles):
        raise _Unsupported("tiles of different sizes or HEVC configurations")
    if hvcc.chroma_format not in _CHROMA_SUBSAMPLING or hvcc.bit_depth_luma > 12:
        raise _Unsupported(f"chroma format {hvcc.chroma_format}, {hvcc.bit_depth_luma} bits")
    if grid is None:
        grid = Grid(1, 1, *tile_size)
    across, down = _CHROMA_SUBSAMPLING[hvcc.chroma_format]
    if len(tiles) > 1 and (tile_size[0] % across or tile_size[1] % down):
        raise _Unsupported(f"{tile_size[0]}x{tile_size[1]} tiles with subsampled chroma")
    if not (
        0 < grid.width <= grid.columns * tile_size[0]
        and 0 < grid.height <= grid.rows * tile_size[1]
    ):
        raise HeifError(f"a {grid.width}x{grid.height} grid its tiles do not cover")
    colour, icc = _colour(primary, first)
    return _Layout(
        tiles=tiles,
        grid=grid,
        tile_size=tile_size,
        hvcc=hvcc,
        crop=_crop(primary.find("clap"), grid),
        turns=_turns(primary),
        colour=colour,
        icc=icc,
    )


def _grid_tiles(heif: Heif, primary: Item) -> tuple[list[Item], Grid]:
    grid = parse_grid(heif.item_data(primary))
    if grid.rows * grid.columns > MAX_TILES:
        raise HeifLimit(
            f"the image is a grid of {grid.rows * grid.columns} tiles, "
            f"more than the {MAX_TILES} allowed"
        )
    ids = primary.references.get("dimg", [])
    if len(ids) != grid.rows * grid.columns or not set(ids) <= heif.items.keys():
        raise HeifError(f"a {grid.rows}x{grid.columns} grid with {len(ids)} tiles")
    return [heif.items[tile] for tile in ids], grid


def _check_properties(item: Item, primary: Item) -> None:
    """Raise _Unsupported for an essential property not applied here, and for a tile
    with a transformation of its own."""
    for box, _, essential in item.properties:
        if essential and box not in _KNOWN_PROPERTIES:
            raise _Unsupported(f"the essential property {box!r}")
        if item is not primary and box in ("irot", "imir", "clap"):
            raise _Unsupported(f"a tile with its own {box!r}")


def _is_alpha(aux: Item) -> bool:
    kind = aux.find("auxC")
    return isinstance(kind, str) and kind.endswith((":auxid:1", ":alpha"))


def _colour(primary: Item, tile: Item) -> tuple[Nclx | None, bytes | None]:
    """The nclx colour (the primary's, else its first tile's) and the ICC profile."""
    found = [v for item in (primary, tile) for box, v, _ in item.properties if box == "colr"]
    nclx = next((value for value in found if isinstance(value, Nclx)), None)
    icc = next((value for value in found if isinstance(value, bytes)), None)
    if nclx is not None:
        _check_colour(nclx, icc)
    return nclx, icc


def _stream_colour(frame: VideoFrame, icc: bytes | None) -> Nclx:
    """The colour an HEVC stream's VUI gives, which libheif uses when the file has no nclx
    (a limited-range stream read as full range came out 9 levels off)."""
    if frame.color_range not in (_LIMITED_RANGE, _FULL_RANGE):
        raise _Unsupported("neither the file nor its HEVC stream says its colour range")
    colour = Nclx(
        primaries=frame.color_primaries,
        transfer=frame.color_trc,
        matrix=frame.colorspace,
        full_range=frame.color_range == _FULL_RANGE,
    )
    _check_colour(colour, icc)
    return colour


def _check_colour(colour: Nclx, icc: bytes | None) -> None:
    if colour.matrix not in _MATRICES:
        raise _Unsupported(f"matrix coefficients {colour.matrix}")
    if icc is None and colour.primaries not in _SRGB_PRIMARIES:
        # pillow-heif reports the primaries' chromaticities, which bring them to sRGB.
        raise _Unsupported(f"colour primaries {colour.primaries} without an ICC profile")


def _crop(clap: object, grid: Grid) -> tuple[float, float, float, float]:
    whole = (0.0, 0.0, float(grid.width), float(grid.height))
    if not isinstance(clap, Clap):
        return whole
    # ISO/IEC 14496-12: the aperture is centred on the picture's centre plus the offsets.
    left = clap.horizontal_offset + (grid.width - clap.width) / 2
    top = clap.vertical_offset + (grid.height - clap.height) / 2
    box = (left, top, left + clap.width, top + clap.height)
    if min(box[:2]) < 0 or box[2] > grid.width or box[3] > grid.height or clap.width < 1:
        raise HeifError(f"a clean aperture {box} outside the {grid.width}x{grid.height} image")
    return box


def _turns(primary: Item) -> list[Image.Transpose]:
    """irot (anticlockwise quarter turns) and imir as Pillow transpositions, in order."""
    turns = []
    for box, value, _ in primary.properties:
        if box == "irot" and value in _ROTATIONS:
            turns.append(_ROTATIONS[value])
        elif box == "imir":
            # libheif's reading (and how it writes EXIF orientation 2): axis 1 mirrors
            # left to right, 0 top to bottom.
            turns.append(
                Image.Transpose.FLIP_LEFT_RIGHT if value == 1 else Image.Transpose.FLIP_TOP_BOTTOM
            )
    return turns


def _decode(heif: Heif, layout: _Layout, bounds: FrameBounds, cancel: CancelToken) -> Image.Image:
    width, height = layout.shown
    bounds.check_pixels(width, height, "image")
    target = bounds.fit_size(width, height)
    factor = _reduce_factor(layout, target)
    bounds.check_memory(_decoding_bytes(layout, factor, target, len(heif.data)), width, height)
    cancel.check()
    canvas = _Canvas(layout, factor)
    context = av.CodecContext.create("hevc", "r")
    context.extradata = layout.hvcc.raw
    context.thread_type = "AUTO"
    context.thread_count = DECODE_THREADS
    tile_width, tile_height = layout.tile_size
    context.options = {
        "err_detect": _ERROR_DETECTION,
        # The decoder's own bound, checked as it allocates: a tile whose parameter sets
        # claim more than its ispe (plus coding-block padding) is refused, not decoded.
        "max_pixels": str((tile_width + 64) * (tile_height + 64)),
    }
    try:
        for index, tile in enumerate(layout.tiles):
            cancel.check()
            packet = av.Packet(heif.item_data(tile))
            packet.pts = index
            for frame in context.decode(packet):
                canvas.place(frame)
        for frame in context.decode(None):
            canvas.place(frame)
    except av.error.FFmpegError as err:
        log.info("FFmpeg cannot decode the HEIC's tiles: %s", err)
        raise MediaError(CORRUPT) from err
    if len(canvas.done) != len(layout.tiles):
        log.info("%d of the HEIC's %d tiles decoded", len(canvas.done), len(layout.tiles))
        raise MediaError(CORRUPT)
    return canvas.picture(target)


def _reduce_factor(layout: _Layout, target: tuple[int, int]) -> int:
    """The largest power of two the shown picture can be box-reduced by, staying at least
    target, that divides a grid's tiles (so each tile lands on whole reduced pixels)."""
    factor = 1
    shown, tile, single = layout.shown, layout.tile_size, len(layout.tiles) == 1
    while all(side // (factor * 2) >= want for side, want in zip(shown, target, strict=True)) and (
        single or not (tile[0] % (factor * 2) or tile[1] % (factor * 2))
    ):
        factor *= 2
    return factor


def _decoding_bytes(layout: _Layout, factor: int, target: tuple[int, int], file_bytes: int) -> int:
    """Memory decoding takes at once: the file, FFmpeg's frames, the canvases, the result."""
    across, down = _CHROMA_SUBSAMPLING[layout.hvcc.chroma_format]
    planes = 1 + 2 / (across * down)  # samples a pixel, chroma included
    tile = layout.tile_size[0] * layout.tile_size[1] * planes
    sample = 1 if layout.hvcc.bit_depth_luma == 8 else 2
    # A frame per decoding thread and one being handed over; each tile copied once to
    # 8 bits while it is reduced.
    frames = min(len(layout.tiles), DECODE_THREADS) + 1
    decoder = _DECODER_BYTES + tile * sample * frames + tile
    grid = layout.grid
    canvases = grid.columns * layout.tile_size[0] * grid.rows * layout.tile_size[1] * planes
    # The three resampled planes and the RGB picture (four bytes a pixel in Pillow).
    result = target[0] * target[1] * (3 + 4)
    return int(file_bytes + decoder + canvases / (factor * factor) + result)


class _Canvas:
    """The grid's reduced Y, Cb and Cr planes; tiles are placed as they are decoded."""

    def __init__(self, layout: _Layout, factor: int) -> None:
        self.layout, self.factor = layout, factor
        across, down = _CHROMA_SUBSAMPLING[layout.hvcc.chroma_format]
        # Chroma is already subsampled: it is reduced that much less.
        self.chroma_factor = (max(1, factor // across), max(1, factor // down))
        self.chroma_scale = (across * self.chroma_factor[0], down * self.chroma_factor[1])
        depth = layout.hvcc.bit_depth_luma
        name = _CHROMA_NAMES[layout.hvcc.chroma_format]
        self.format = f"yuv{name}p" if depth == 8 else f"yuv{name}p{depth}le"
        width, height = layout.tile_size
        self.luma_tile = (-(-width // factor), -(-height // factor))
        self.chroma_tile = (
            -(-width // self.chroma_scale[0]),
            -(-height // self.chroma_scale[1]),
        )
        grid = layout.grid
        self.planes = [
            Image.new("L", (grid.columns * size[0], grid.rows * size[1]))
            for size in (self.luma_tile, self.chroma_tile, self.chroma_tile)
        ]
        self.done: set[int] = set()
        self.colour = layout.colour

    def place(self, frame: VideoFrame) -> None:
        """Reduce a decoded tile's planes and paste them where its index (pts) says."""
        index = frame.pts
        if index is None or not 0 <= index < len(self.layout.tiles) or index in self.done:
            raise MediaError(CORRUPT)
        # FFmpeg names 8-bit full-range formats "yuvj"; the range comes from the nclx.
        pixel_format = frame.format.name.replace("yuvj", "yuv")
        if pixel_format != self.format or (frame.width, frame.height) != self.layout.tile_size:
            raise _Unsupported(
                f"a {frame.width}x{frame.height} {frame.format.name} tile where its "
                f"properties say {self.layout.tile_size} {self.format}"
            )
        self.done.add(index)
        if self.colour is None:
            self.colour = _stream_colour(frame, self.layout.icc)
        row, column = divmod(index, self.layout.grid.columns)
        factors = ((self.factor, self.factor), self.chroma_factor, self.chroma_factor)
        sizes = (self.luma_tile, self.chroma_tile, self.chroma_tile)
        for canvas, plane, factor, size in zip(
            self.planes, frame.planes, factors, sizes, strict=True
        ):
            image = _to_8_bits(plane, self.layout.hvcc.bit_depth_luma)
            if factor != (1, 1):
                image = image.reduce(factor)
            canvas.paste(image, (column * size[0], row * size[1]))

    def picture(self, target: tuple[int, int]) -> Image.Image:
        """The shown part, resampled to target, in RGB, turned by irot and imir."""
        left, top, right, bottom = self.layout.crop
        luma, blue, red = (
            plane.resize(
                target,
                Image.Resampling.LANCZOS,
                box=(left / across, top / down, right / across, bottom / down),
            )
            for plane, (across, down) in zip(
                self.planes,
                ((self.factor, self.factor), self.chroma_scale, self.chroma_scale),
                strict=True,
            )
        )
        if self.colour is None:
            raise MediaError(CORRUPT)  # no tile decoded
        rgb = _to_rgb(luma, blue, red, self.colour)
        for turn in self.layout.turns:
            rgb = rgb.transpose(turn)
        if self.layout.icc:
            rgb.info["icc_profile"] = self.layout.icc
        return rgb


def _to_8_bits(plane: VideoPlane, depth: int) -> Image.Image:
    """A plane as 8-bit samples: FFmpeg's 10- and 12-bit ones are little-endian uint16."""
    if depth == 8:
        samples = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, -1)
    else:
        wide = np.frombuffer(memoryview(plane), np.uint16).reshape(plane.height, -1)
        # Dropping the low bits, as libheif does: rounding moved colours by a level.
        samples = (wide >> (depth - 8)).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(samples[:, : plane.width]))


def _to_rgb(luma: Image.Image, blue: Image.Image, red: Image.Image, colour: Nclx) -> Image.Image:
    if colour.full_range and _MATRICES[colour.matrix] == _MATRICES[6]:
        # Pillow's YCbCr is JPEG's: BT.601, full range.
        return Image.merge("YCbCr", (luma, blue, red)).convert("RGB")
    kr, kb = _MATRICES[colour.matrix]
    y = np.asarray(luma, np.float32)
    cb = np.asarray(blue, np.float32) - 128
    cr = np.asarray(red, np.float32) - 128
    if not colour.full_range:
        y = (y - 16) * (255 / 219)
        cb *= 255 / 224
        cr *= 255 / 224
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    rgb = np.clip(np.stack([r, g, b], axis=-1) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb)
