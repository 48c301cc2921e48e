"""HEICs decoded straight to the model's size (frame_service.heic): the same picture as
pillow-heif's full decode, upright, within budget, refused when cut short, and left to
pillow-heif when they hold what the fast path does not read."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from frame_service.cancellation import CancelToken
from frame_service.frames import FrameBounds, MediaError
from frame_service.heic import MAX_TILES, decode_heic
from frame_service.heif import HvcC, parse
from frame_service.images import prepare_image
from tests.media import sample_photo

# Small bounds keep the files small and still reduce each tile by 4 (chroma by 2).
SMALL = FrameBounds(max_side=320, short_side=240)
EXIF_ORIENTATION = 0x0112
# Mean absolute difference (0-255) from pillow-heif's decode resized as prepare_image
# resizes it: 0.6-0.8 at the default 720x540 (the study's 12 MP photos), up to 1.7 at these
# small sizes, where box-reducing first softens a little more. A picture one pixel off is
# 7 levels off, one read as limited range 9, a mirrored one 46.
CLOSE = 2.5


def photo(size: tuple[int, int]) -> Image.Image:
    """A real photo, asymmetric enough that a wrong turn or mirror shows."""
    with Image.open(sample_photo("coffee.png")) as source:
        return source.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def save_heic(path: Path, picture: Image.Image, **options: object) -> Path:
    heif = pillow_heif.from_pillow(picture)
    heif.save(path, quality=70, **options)
    return path


def decoded(path: Path, bounds: FrameBounds = SMALL) -> Image.Image | None:
    with open(path, "rb") as fh:
        return decode_heic(fh, bounds, CancelToken())


def pillow_heif_reference(path: Path, size: tuple[int, int]) -> Image.Image:
    full = pillow_heif.open_heif(path).to_pillow().convert("RGB")
    return full.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def difference(one: Image.Image, other: Image.Image) -> float:
    assert one.size == other.size
    return float(np.abs(np.asarray(one, float) - np.asarray(other, float)).mean())


def primary_type(path: Path) -> str:
    heif = parse(path.read_bytes())
    return heif.items[heif.primary].type


@pytest.fixture(scope="module")
def grid_heic(tmp_path_factory) -> Path:
    """2048x1536 in 512x512 tiles, as iPhones store their photos."""
    return save_heic(
        tmp_path_factory.mktemp("heic") / "grid.heic", photo((2048, 1536)), tile_size=512
    )


def test_a_grid_heic_is_decoded_tile_by_tile_as_pillow_heif_decodes_it(grid_heic):
    assert primary_type(grid_heic) == "grid"
    fast = decoded(grid_heic)
    assert fast is not None
    assert fast.size == SMALL.fit_size(2048, 1536)
    assert difference(fast, pillow_heif_reference(grid_heic, fast.size)) < CLOSE


def test_a_single_image_heic_is_decoded_as_pillow_heif_decodes_it(tmp_path):
    path = save_heic(tmp_path / "single.heic", photo((1200, 800)))
    assert primary_type(path) == "hvc1"
    fast = decoded(path)
    assert fast is not None
    assert difference(fast, pillow_heif_reference(path, fast.size)) < CLOSE


def test_a_10_bit_grid_heic_comes_out_as_pillow_heif_brings_it_to_8_bits(tmp_path):
    pixels = np.asarray(photo((1024, 1024))).astype(np.uint16) * 257
    heif = pillow_heif.from_bytes("RGB;16", (1024, 1024), pixels.tobytes())
    path = tmp_path / "hdr.heic"
    heif.save(path, quality=70, tile_size=512)
    tile = next(item for item in parse(path.read_bytes()).items.values() if item.type == "hvc1")
    assert isinstance(hvcc := tile.find("hvcC"), HvcC) and hvcc.bit_depth_luma == 10
    fast = decoded(path)
    assert fast is not None
    assert difference(fast, pillow_heif_reference(path, fast.size)) < CLOSE


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_orientation_comes_out_as_pillow_heif_turns_it(tmp_path, orientation):
    # pillow-heif stores an EXIF orientation as irot and imir, which libheif applies.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = save_heic(
        tmp_path / "turned.heic", photo((1024, 512)), exif=exif.tobytes(), tile_size=512
    )
    fast = decoded(path)
    assert fast is not None
    reference = pillow_heif_reference(path, fast.size)
    assert difference(fast, reference) < CLOSE, orientation
    picture = prepare_image(path, SMALL)
    assert (picture.width, picture.height) == fast.size


def test_a_grid_heic_is_told_within_a_budget_its_full_decode_would_exceed(grid_heic, tmp_path):
    tight = FrameBounds(max_decoded_mb=16)
    # The same size with alpha goes to pillow-heif: 2048x1536 RGBA, decoded and copied
    # (25 MB); the grid is told in about 12.
    translucent = photo((2048, 1536)).convert("RGBA")
    translucent.putalpha(200)
    full = save_heic(tmp_path / "alpha.heic", translucent, tile_size=512)
    with pytest.raises(MediaError, match="more than the 16 MB allowed"):
        prepare_image(full, tight)
    picture = prepare_image(grid_heic, tight)
    assert (picture.width, picture.height) == tight.fit_size(2048, 1536)


def test_an_alpha_heic_is_left_to_pillow_heif(tmp_path):
    translucent = photo((600, 400)).convert("RGBA")
    translucent.putalpha(200)
    path = save_heic(tmp_path / "alpha.heic", translucent)
    assert decoded(path) is None
    picture = prepare_image(path, SMALL)
    assert (picture.width, picture.height) == SMALL.fit_size(600, 400)


def test_an_avif_is_left_to_pillow(tmp_path):
    path = tmp_path / "photo.avif"
    photo((600, 400)).save(path, format="AVIF")
    assert decoded(path) is None
    assert prepare_image(path, SMALL).width == SMALL.fit_size(600, 400)[0]


@pytest.mark.parametrize("kept", [0.6, 0.33])
def test_a_truncated_heic_is_refused_as_today(grid_heic, tmp_path, kept):
    # libheif decodes the missing tiles grey without a word; this is a bad upload.
    data = grid_heic.read_bytes()
    path = tmp_path / "cut.heic"
    path.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(MediaError, match="the image is corrupt or truncated"):
        prepare_image(path, SMALL)


def test_a_heic_with_a_damaged_tile_is_refused_as_corrupt(grid_heic, tmp_path):
    data = bytearray(grid_heic.read_bytes())
    heif = parse(bytes(data))
    tile = heif.items[heif.items[heif.primary].references["dimg"][2]]
    offset, length = tile.extents[0]
    noise = np.random.default_rng(3).integers(0, 256, length - 64, np.uint8)
    data[offset + 64 : offset + length] = noise.tobytes()  # its slice header kept
    path = tmp_path / "damaged.heic"
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="the image is corrupt or truncated"):
        prepare_image(path, SMALL)


def test_a_200_mp_grid_in_a_small_file_is_refused_naming_the_limit_before_decoding(tmp_path):
    path = one_tile_grid(tmp_path, (28, 28))  # 14336 x 14336: 205 megapixels
    started = time.monotonic()
    with pytest.raises(MediaError, match="more than the 40000000 allowed"):
        prepare_image(path, FrameBounds())
    assert time.monotonic() - started < 1.0


def test_a_200_mp_grid_allowed_by_the_operator_is_told_within_a_small_budget(tmp_path):
    path = one_tile_grid(tmp_path, (28, 28))
    # Its full decode would take 800 MB; reduced by 16 as it is decoded, it needs a few.
    bounds = FrameBounds(max_pixels=250_000_000, max_decoded_mb=16)
    picture = prepare_image(path, bounds)
    assert (picture.width, picture.height) == (540, 540)


def test_a_grid_of_more_tiles_than_allowed_is_refused_naming_the_limit(tmp_path):
    path = one_tile_grid(tmp_path, (40, 40))
    with pytest.raises(MediaError, match=f"more than the {MAX_TILES} allowed"):
        prepare_image(path, FrameBounds())


def one_tile_grid(folder: Path, shape: tuple[int, int]) -> Path:
    """A HEIF whose grid repeats one 512x512 tile rows x columns times: a file of a few
    kB that declares rows x columns x 262,144 pixels."""
    source = save_heic(folder / "tile.heic", Image.new("RGB", (512, 512), (90, 140, 60)))
    tile = parse(source.read_bytes())
    item = tile.items[tile.primary]
    hvcc, data = item.find("hvcC"), tile.item_data(item)
    assert isinstance(hvcc, HvcC)
    rows, columns = shape
    size = (columns * 512, rows * 512)
    grid = struct.pack(">BBBBII", 0, 1, rows - 1, columns - 1, *size)

    def box(kind: bytes, payload: bytes, version: int | None = None) -> bytes:
        if version is not None:
            payload = struct.pack(">I", version << 24) + payload
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    def meta(tile_offset: int) -> bytes:
        infe = [
            box(b"infe", struct.pack(">HH", number, 0) + kind + b"\0", version=2)
            for number, kind in ((1, b"grid"), (2, b"hvc1"))
        ]
        dimg = box(
            b"dimg", struct.pack(f">HH{rows * columns}H", 1, rows * columns, *[2] * rows * columns)
        )
        properties = box(
            b"ipco",
            box(b"hvcC", hvcc.raw)
            + box(b"ispe", struct.pack(">II", 512, 512), version=0)
            + box(b"ispe", struct.pack(">II", *size), version=0),
        )
        # grid: ispe (3); tile: hvcC (1, essential) and ispe (2).
        associations = box(b"ipma", struct.pack(">IHBBHBBB", 2, 1, 1, 3, 2, 2, 0x81, 2), 0)
        locations = (
            struct.pack(">BBH", 0x44, 0x00, 2)
            + struct.pack(">HHHHII", 1, 1, 0, 1, 0, len(grid))
            + struct.pack(">HHHHII", 2, 0, 0, 1, tile_offset, len(data))
        )
        return box(
            b"meta",
            box(b"hdlr", struct.pack(">I4s12sB", 0, b"pict", bytes(12), 0), version=0)
            + box(b"pitm", struct.pack(">H", 1), version=0)
            + box(b"iinf", struct.pack(">H", 2) + b"".join(infe), version=0)
            + box(b"iref", dimg, version=0)
            + box(b"iprp", properties + associations)
            + box(b"iloc", locations, version=1)
            + box(b"idat", grid),
            version=0,
        )

    ftyp = box(b"ftyp", b"heic" + bytes(4) + b"mif1heic")
    start = len(ftyp) + len(meta(0)) + 8
    path = folder / "huge.heic"
    path.write_bytes(ftyp + meta(start) + box(b"mdat", data))
    return path
