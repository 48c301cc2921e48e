"""Colours and light: the dominant colour names of a picture and how bright it is."""

from typing import NamedTuple

import numpy as np
from PIL import Image

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


class Look(NamedTuple):
    """How a picture looks: its colours, mean luma and a word for its light."""

    colors: tuple[str, ...]
    brightness: float
    light: str


def measure_look(image: Image.Image) -> Look:
    """Name an RGB image's dominant colours and measure its brightness and light.

    colors: up to three colour names, most area first, each covering at least 5%.
    brightness: mean luma from 0 (black) to 1 (white), rounded to 4 places.
    light: brightness bucketed (see _LIGHT_LEVELS); it reads exposure, not the light
    source.
    """
    thumbnail = _thumbnail(image)
    brightness = _brightness(thumbnail)
    return Look(
        colors=_dominant_colors(thumbnail),
        brightness=round(brightness, 4),
        light=_light(brightness),
    )


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
    rules: list[tuple[np.ndarray, np.ndarray | str]] = [
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
