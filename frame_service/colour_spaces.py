"""Colour spaces: pictures in a wide gamut (Display P3, Adobe RGB, BT.2020) brought to sRGB.

The story model reads every picture as sRGB. A phone's photo in Display P3 read as sRGB
looks dull and off-hue, so a picture whose ICC profile is not sRGB is converted by
littlecms (Pillow's ImageCms), on the reduced picture, never the full one. A HEIC with
no ICC profile says its colours by NCLX code points (ITU-T H.273) instead; those with
other primaries than sRGB's and a standard dynamic range curve are converted through a
profile built from the primaries they name. PQ and HLG (HDR) pictures are not tone
mapped: they are left as decoded.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageCms

log = logging.getLogger(__name__)

Chromaticity = tuple[float, float]  # CIE 1931 x, y

# H.273 colour primaries that are sRGB's (1: BT.709) or say nothing (2: unspecified).
_SRGB_PRIMARIES = frozenset({1, 2})
# H.273 transfer characteristics with sRGB's curve or one close enough to it for 8-bit
# pictures: 1, 6, 14 and 15 are BT.709's, 13 is sRGB's, 2 is unspecified.
_SDR_TRANSFERS = frozenset({1, 2, 6, 13, 14, 15})
# The PCS white every ICC profile is relative to, and Bradford's cone response matrix.
_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
_CURVE_POINTS = 1024  # entries of the sRGB tone curve table in a built profile


def source_profile(info: Mapping[str | tuple[int, int], Any]) -> ImageCms.ImageCmsProfile | None:
    """The RGB profile a picture's pixels are in, from its Pillow info, when it is not sRGB.

    An embedded ICC profile comes first; else a HEIC's NCLX colour (pillow-heif's
    ``nclx_profile``) with other primaries and an SDR curve. None for sRGB, for no
    colour information, for a profile that is not RGB (CMYK and grey pictures are
    converted as before) and for one littlecms cannot read (logged, never refused).
    """
    icc = info.get("icc_profile")
    if icc:
        return _icc_profile(bytes(icc))
    nclx = info.get("nclx_profile")
    if isinstance(nclx, Mapping):
        return _nclx_profile(nclx)
    return None


def to_srgb(img: Image.Image, profile: ImageCms.ImageCmsProfile | None) -> Image.Image:
    """An RGB picture in profile's colours brought to sRGB; anything else is returned as is."""
    if profile is None or img.mode != "RGB":
        return img
    converted = ImageCms.applyTransform(img, _transform(profile.tobytes()))
    assert converted is not None  # applyTransform returns None only with inPlace=True
    return converted


def rgb_profile(
    red: Chromaticity, green: Chromaticity, blue: Chromaticity, white: Chromaticity, name: str
) -> bytes:
    """An ICC v2 display profile (matrix and sRGB tone curves) for RGB with these primaries.

    Raises ValueError if the primaries are degenerate (on one line).
    """
    colorants = _colorants((red, green, blue), white)
    curve = np.linspace(0.0, 1.0, _CURVE_POINTS)
    linear = np.where(curve <= 0.04045, curve / 12.92, ((curve + 0.055) / 1.055) ** 2.4)
    trc = (
        b"curv"
        + bytes(4)
        + struct.pack(f">I{_CURVE_POINTS}H", _CURVE_POINTS, *np.round(linear * 65535).astype(int))
    )
    tags = [
        (b"desc", _description(name)),
        (b"cprt", b"text" + bytes(4) + b"No copyright, use freely\0"),
        (b"wtpt", _xyz(_D50)),
        (b"rXYZ", _xyz(colorants[:, 0])),
        (b"gXYZ", _xyz(colorants[:, 1])),
        (b"bXYZ", _xyz(colorants[:, 2])),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
    ]
    return _assemble(tags)


@functools.lru_cache(maxsize=32)
def _transform(icc: bytes) -> ImageCms.ImageCmsTransform:
    # One transform per profile, shared by every thread: NOCACHE drops littlecms's
    # one-pixel cache, the only state a transform changes while it runs.
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        _srgb(),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        flags=ImageCms.Flags.NOCACHE,
    )


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _icc_profile(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError) as err:
        log.info("ignoring an ICC profile littlecms cannot read: %s", err)
        return None
    description = profile.profile.profile_description or ""
    if profile.profile.xcolor_space.strip() != "RGB" or "sRGB" in description:
        return None
    return profile


def _nclx_profile(nclx: Mapping[str, Any]) -> ImageCms.ImageCmsProfile | None:
    primaries = nclx.get("color_primaries")
    transfer = nclx.get("transfer_characteristics")
    if primaries in _SRGB_PRIMARIES:
        return None
    if transfer not in _SDR_TRANSFERS:
        log.debug("not converting NCLX primaries %s with transfer %s", primaries, transfer)
        return None
    try:
        red, green, blue, white = (
            (float(nclx[f"color_primary_{name}_x"]), float(nclx[f"color_primary_{name}_y"]))
            for name in ("red", "green", "blue", "white")
        )
        icc = rgb_profile(red, green, blue, white, name=f"H.273 primaries {primaries}")
    except (KeyError, TypeError, ValueError) as err:
        log.info("ignoring NCLX colour primaries %s: %s", primaries, err)
        return None
    return _icc_profile(icc)


def _colorants(primaries: Sequence[Chromaticity], white: Chromaticity) -> np.ndarray:
    """The RGB to XYZ matrix of these primaries, adapted from their white to D50 (Bradford)."""

    def xyz(point: Chromaticity) -> np.ndarray:
        x, y = point
        if y <= 0:
            raise ValueError(f"chromaticity {point} has no luminance")
        return np.array([x / y, 1.0, (1 - x - y) / y])

    columns = np.column_stack([xyz(point) for point in primaries])
    white_xyz = xyz(white)
    if abs(np.linalg.det(columns)) < 1e-9:
        raise ValueError("the primaries are degenerate")
    matrix = columns * np.linalg.solve(columns, white_xyz)
    cones = np.diag((_BRADFORD @ _D50) / (_BRADFORD @ white_xyz))
    adapt = np.linalg.inv(_BRADFORD) @ cones @ _BRADFORD
    result: np.ndarray = adapt @ matrix
    return result


def _xyz(value: np.ndarray) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15f16(float(v)) for v in value)


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _description(name: str) -> bytes:
    ascii_name = name.encode("ascii", "replace") + b"\0"
    # textDescriptionType: the ASCII name, then empty Unicode and ScriptCode parts.
    return (
        b"desc"
        + bytes(4)
        + struct.pack(">I", len(ascii_name))
        + ascii_name
        + bytes(4 + 4 + 2 + 1 + 67)
    )


def _assemble(tags: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A profile's header, tag table and tag data (each tag 4-byte aligned)."""
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], []
    for signature, body in tags:
        table.append(signature + struct.pack(">II", offset, len(body)))
        padded = body + bytes(-len(body) % 4)
        data.append(padded)
        offset += len(padded)
    header = bytearray(128)
    struct.pack_into(">I", header, 0, offset)
    header[8:12] = bytes((2, 0x10, 0, 0))  # version 2.1
    header[12:24] = b"mntrRGB XYZ "
    header[36:40] = b"acsp"
    header[68:80] = b"".join(_s15f16(float(v)) for v in _D50)
    return bytes(header) + struct.pack(">I", len(tags)) + b"".join(table) + b"".join(data)
