"""The photos and videos people have: HEIC, HEIF, AVIF, WebP, GIF, MOV, WebM and MKV,
recognised by their bytes, decoded the right way up, and refused clearly when damaged."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms

from contracts.messages import MediaKind
from frame_service.colour_spaces import rgb_profile
from frame_service.frames import FrameBounds, MediaError
from frame_service.images import prepare_image
from frame_service.video import extract_video
from gateway.uploads import sniff
from tests import media

BOUNDS = FrameBounds()
RED, BLUE = (220, 30, 30), (30, 30, 220)
EXIF_ORIENTATION = 0x0112
# Pillow's format name and the file's extension for each photo format.
PHOTO_FORMATS = [
    ("JPEG", "jpg"),
    ("PNG", "png"),
    ("WEBP", "webp"),
    ("AVIF", "avif"),
    ("HEIF", "heic"),
]


def upright() -> Image.Image:
    """600x400, red on top, blue below: which way is up is plain to see."""
    pixels = np.zeros((400, 600, 3), np.uint8)
    pixels[:200], pixels[200:] = RED, BLUE
    return Image.fromarray(pixels)


def write_sideways(path: Path, image_format: str) -> Path:
    """The picture stored on its side, as a phone held upright stores it, with EXIF
    orientation 6 (turn 90 degrees clockwise to show)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    sideways = upright().transpose(Image.Transpose.ROTATE_90)
    sideways.save(path, format=image_format, exif=exif.tobytes())
    return path


def top_and_bottom(jpeg: bytes) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float)
    quarter = pixels.shape[0] // 4
    return pixels[:quarter].mean(axis=(0, 1)), pixels[-quarter:].mean(axis=(0, 1))


def near(color: np.ndarray, expected: tuple[int, int, int], tolerance: float = 30) -> bool:
    return bool(np.abs(color - np.array(expected)).max() <= tolerance)


@pytest.mark.parametrize(("image_format", "ext"), PHOTO_FORMATS)
def test_a_sideways_photo_of_each_format_comes_out_upright(tmp_path, image_format, ext):
    path = write_sideways(tmp_path / f"phone.{ext}", image_format)
    assert sniff(path.read_bytes()[:16]) is MediaKind.IMAGE
    picture = prepare_image(path, BOUNDS)
    assert (picture.width, picture.height) == (600, 400)
    top, bottom = top_and_bottom(picture.jpeg)
    assert near(top, RED) and near(bottom, BLUE), (top, bottom)


def test_a_still_gif_is_a_photo(tmp_path):
    path = tmp_path / "still.gif"
    upright().save(path, format="GIF")
    assert sniff(path.read_bytes()[:16]) is MediaKind.IMAGE
    top, bottom = top_and_bottom(prepare_image(path, BOUNDS).jpeg)
    assert near(top, RED) and near(bottom, BLUE)


def test_a_10_bit_heic_comes_out_as_the_same_8_bit_colours(tmp_path):
    # 16-bit samples, saved by libheif at 10 bits: no washed-out or green picture.
    pixels = np.zeros((400, 600, 3), np.uint16)
    pixels[:200], pixels[200:] = (np.array(RED) * 257), (np.array(BLUE) * 257)
    heif = pillow_heif.from_bytes("RGB;16", (600, 400), pixels.tobytes())
    path = tmp_path / "hdr.heic"
    heif.save(path, quality=-1)
    assert pillow_heif.open_heif(path, convert_hdr_to_8bit=False).info["bit_depth"] > 8
    top, bottom = top_and_bottom(prepare_image(path, BOUNDS).jpeg)
    assert near(top, RED) and near(bottom, BLUE), (top, bottom)


# Display P3's primaries and white (D65), and the published matrix from linear P3 to
# linear sRGB: the expected colours are worked out here, not by the code under test.
P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.3127, 0.3290))
P3_TO_SRGB = np.array([[1.2249, -0.2247, 0.0], [-0.0420, 1.0419, 0.0], [-0.0197, -0.0786, 1.0979]])
P3_COLOURS = [(200, 60, 60), (60, 180, 60), (40, 80, 200)]


def p3_as_srgb(color: tuple[int, int, int]) -> np.ndarray:
    encoded = np.array(color) / 255
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    out = np.clip(P3_TO_SRGB @ linear, 0, 1)
    return 255 * np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


def p3_picture() -> Image.Image:
    """Three bands of P3 colours, 600x400."""
    pixels = np.zeros((400, 600, 3), np.uint8)
    for index, color in enumerate(P3_COLOURS):
        pixels[:, index * 200 : (index + 1) * 200] = color
    return Image.fromarray(pixels)


def band_colours(jpeg: bytes) -> list[np.ndarray]:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float)
    third = pixels.shape[1] // 3
    return [pixels[:, i * third + 20 : (i + 1) * third - 20].mean(axis=(0, 1)) for i in range(3)]


@pytest.mark.parametrize(("image_format", "ext"), PHOTO_FORMATS)
def test_a_display_p3_photo_comes_out_in_srgb(tmp_path, image_format, ext):
    path = tmp_path / f"iphone.{ext}"
    icc = rgb_profile(*P3, name="Display P3")
    extra = {"quality": 95} if image_format in ("JPEG", "WEBP", "AVIF", "HEIF") else {}
    p3_picture().save(path, format=image_format, icc_profile=icc, **extra)
    for seen, color in zip(band_colours(prepare_image(path, BOUNDS).jpeg), P3_COLOURS, strict=True):
        expected = p3_as_srgb(color)
        # P3's (200, 60, 60) is sRGB's (217, 42, 52): read as sRGB it would be 18 off.
        assert np.abs(expected - np.array(color)).max() > 15
        assert np.abs(seen - expected).max() <= 5, (color, seen, expected)


def test_a_heic_with_p3_primaries_and_no_icc_profile_comes_out_in_srgb(tmp_path):
    path = tmp_path / "android.heic"
    # NCLX: P3 primaries (12), the sRGB curve (13), BT.601 matrix (6).
    options = {"color_primaries": 12, "transfer_characteristic": 13, "matrix_coefficients": 6}
    p3_picture().save(path, format="HEIF", quality=95, **options)
    with Image.open(path) as written:
        assert "icc_profile" not in written.info
        assert written.info["nclx_profile"]["color_primaries"] == 12
    for seen, color in zip(band_colours(prepare_image(path, BOUNDS).jpeg), P3_COLOURS, strict=True):
        assert np.abs(seen - p3_as_srgb(color)).max() <= 6, (color, seen)


@pytest.mark.parametrize("image_format", ["JPEG", "HEIF"])
def test_an_srgb_photo_keeps_its_colours(tmp_path, image_format):
    path = tmp_path / "srgb.img"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    p3_picture().save(path, format=image_format, quality=95, icc_profile=srgb)
    for seen, color in zip(band_colours(prepare_image(path, BOUNDS).jpeg), P3_COLOURS, strict=True):
        assert np.abs(seen - np.array(color)).max() <= 5, (color, seen)


def test_a_heic_past_the_limits_is_refused_naming_them_before_it_is_decoded(tmp_path):
    path = tmp_path / "huge.heic"
    upright().save(path, format="HEIF", quality=50)
    with pytest.raises(MediaError, match="more than the 200000 allowed"):
        prepare_image(path, FrameBounds(max_pixels=200_000))  # 600x400 is 240,000
    # Its decoding counts libheif's buffer and Pillow's copy: 600x400x4 twice is 1.9 MB.
    with pytest.raises(MediaError, match="more than the 1 MB allowed"):
        prepare_image(path, FrameBounds(max_decoded_mb=1))


def test_a_heic_with_several_images_is_told_by_its_primary_one(tmp_path):
    heif = pillow_heif.from_pillow(upright())
    heif.add_from_pillow(Image.new("RGB", (300, 300), (0, 200, 0)))  # a burst's second shot
    path = tmp_path / "burst.heic"
    heif.save(path, quality=90)
    picture = prepare_image(path, BOUNDS)
    assert (picture.width, picture.height) == (600, 400)
    top, bottom = top_and_bottom(picture.jpeg)
    assert near(top, RED) and near(bottom, BLUE)


@pytest.mark.parametrize(("image_format", "ext"), [*PHOTO_FORMATS[2:], ("GIF", "gif")])
@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_photo_of_each_format_is_refused_clearly(tmp_path, image_format, ext, damage):
    path = tmp_path / f"bad.{ext}"
    buffer = io.BytesIO()
    Image.effect_noise((640, 480), 60).convert("RGB").save(buffer, format=image_format)
    data = buffer.getvalue()
    if damage == "truncated":
        data = data[: len(data) // 3]
    else:  # the header kept, the picture's data noise
        noise = np.random.default_rng(7).integers(0, 256, len(data) - 12, np.uint8)
        data = data[:12] + bytes(noise)  # what tells its kind kept, the rest noise
    path.write_bytes(data)
    with pytest.raises(MediaError) as refused:
        prepare_image(path, BOUNDS)
    detail = str(refused.value)
    assert "corrupt" in detail or "not a" in detail or "cannot" in detail, detail
    assert str(tmp_path) not in detail


@pytest.mark.parametrize(
    ("name", "container", "codec"),
    [
        ("phone.mov", "mov", "libx264"),
        ("hevc.mov", "mov", "libx265"),
        ("clip.webm", "webm", "libvpx-vp9"),
        ("clip.mkv", "matroska", "libx264"),
        ("vp8.webm", "webm", "libvpx"),
        ("av1.webm", "webm", "av1"),
    ],
)
def test_videos_in_each_container_are_recognised_and_decoded_upright(
    tmp_path, name, container, codec
):
    path = media.write_video(
        tmp_path / name,
        1,
        size=(64, 48),
        band=BLUE,
        scenes=[(0.0, RED)],
        rotation=90 if container == "mov" else 0,  # a phone's MOV, recorded upright
        container_format=container,
        codec=codec,
    )
    assert sniff(path.read_bytes()[:16]) is MediaKind.VIDEO
    meta, pictures = extract_video(path, 2, BOUNDS)
    assert pictures
    img = Image.open(io.BytesIO(pictures[0].jpeg)).convert("RGB")
    if container == "mov":
        # Stored 64x48 with the band on top, shown turned a quarter counter-clockwise:
        # upright 48x64 with the band down its left side.
        assert (meta.width, meta.height) == img.size == (48, 64)
        band = np.asarray(img, dtype=float)[:, :6].mean(axis=(0, 1))
    else:
        assert img.size == (64, 48)
        band = np.asarray(img, dtype=float)[:6].mean(axis=(0, 1))
    assert near(band, BLUE, 45), band


def test_a_damaged_webm_is_refused_clearly(tmp_path):
    good = media.write_video(
        tmp_path / "clip.webm", 1, container_format="webm", codec="libvpx-vp9"
    ).read_bytes()
    bad = tmp_path / "bad.webm"
    bad.write_bytes(good[:40] + b"\0" * 200)
    with pytest.raises(MediaError) as refused:
        extract_video(bad, 2, BOUNDS)
    assert str(tmp_path) not in str(refused.value)


@pytest.mark.parametrize(
    "head",
    [b"%PDF-1.7\n" + b"\0" * 8, b"RIFF\0\0\0\0WAVEfmt ", b"\0\0\0\x18ftypqt  ", b"BM" + b"\0" * 14],
)
def test_other_files_stay_refused_and_quicktime_is_a_video(head):
    expected = MediaKind.VIDEO if b"qt  " in head else None
    assert sniff(head) is expected


def _seen(openai) -> list[Image.Image]:
    """The pictures the story model was sent."""
    story = openai.requests[0]
    return [
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        for url in story.image_urls
    ]


@pytest.mark.usefixtures("blob_store")
async def test_a_sideways_heic_becomes_a_story_told_from_an_upright_picture(
    gateway, openai, tmp_path
):
    heic = write_sideways(tmp_path / "IMG_0001.HEIC", "HEIF")
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=[("files", (heic.name, heic.read_bytes(), "image/heic"))]
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "image" and body["english"] and body["thai"]
    (seen,) = _seen(openai)
    assert seen.width > seen.height
    top, bottom = top_and_bottom(_jpeg(seen))
    assert near(top, RED) and near(bottom, BLUE)


@pytest.mark.usefixtures("blob_store")
@pytest.mark.parametrize(
    ("name", "container", "codec", "rotation"),
    [("IMG_0002.MOV", "mov", "libx264", 90), ("capture.webm", "webm", "libvpx-vp9", 0)],
)
async def test_a_phone_mov_and_a_webm_become_stories(
    gateway, openai, tmp_path, name, container, codec, rotation
):
    video = media.write_video(
        tmp_path / name,
        2,
        size=(64, 48),
        band=BLUE,
        scenes=[(0.0, RED)],
        rotation=rotation,
        container_format=container,
        codec=codec,
    )
    async with gateway() as client:
        response = await client.post(
            "/analyze/", files=[("files", (video.name, video.read_bytes(), "video/quicktime"))]
        )
    assert response.status_code == 200, response.text
    assert response.json()["media"] == "video"
    seen = _seen(openai)[0]
    pixels = np.asarray(seen, dtype=float)
    if rotation:  # recorded upright: shown upright, the band down the left
        assert seen.height > seen.width
        band = pixels[:, :4].mean(axis=(0, 1))
    else:
        band = pixels[:4].mean(axis=(0, 1))
    assert near(band, BLUE, 45), band


def _jpeg(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    return buffer.getvalue()
