"""What an OpenAI model charges, in input tokens, for one image of a given size and detail.

Two rules, after OpenAI's "Images and vision" guide, section "Calculating costs"
(https://platform.openai.com/docs/guides/images-vision#calculating-costs), as restated
with its worked examples in the openai-image-token-counter package's token_config.mdx
(October 2025) and checked against billed usage on the OpenAI developer forum
(community.openai.com/t/1230130 and /t/1262691):

- **Patches** (gpt-4.1-mini, gpt-4.1-nano, o4-mini): count the 32 x 32 px patches that
  cover the image. Past 1536, scale the image by r = sqrt(32² x 1536 / (w x h)), shrunk
  further so whole patches fit the limiting side, and count again; never more than
  1536. Multiply by the model's factor (1.62, 2.46, 1.72). `detail` does not change
  this price: the forum measured the same tokens for "low" and "high".
- **Tiles** (gpt-4o, gpt-4.1, gpt-4.5, gpt-4o-mini, o1, o3): "low" costs the base
  tokens. "high" (and "auto", which may pick it: we count the worst case) scales the
  image to fit 2048 x 2048, then its shortest side down to 768, and adds the per-tile
  tokens for every 512 px tile that covers it. Nothing is scaled up.

The documented examples: 1024 x 1024 is 1024 patches, 1800 x 2400 is 1452 patches;
with tiles 1024 x 1024 high is 765 tokens and 2048 x 4096 high is 1105. OpenAI does not
say how it rounds a multiplied price; this module rounds down (1365 x 768 at
gpt-4.1-mini: 1032 patches x 1.62 = 1671).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

DETAILS = ("low", "high", "auto")
# A snapshot's date suffix: "gpt-4.1-mini-2025-04-14" is priced as "gpt-4.1-mini".
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")

PATCH_PX = 32
MAX_PATCHES = 1536
# Hundredths, so the price is exact integer arithmetic.
PATCH_MULTIPLIERS_PERCENT: dict[str, int] = {
    "gpt-4.1-mini": 162,
    "gpt-4.1-nano": 246,
    "o4-mini": 172,
}

TILE_PX = 512
TILE_FIT_PX = 2048
TILE_SHORT_SIDE_PX = 768
# (base tokens, tokens per tile)
TILE_PRICES: dict[str, tuple[int, int]] = {
    "gpt-4o": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "o1": (75, 150),
    "o3": (75, 150),
}


def image_tokens(width: int, height: int, model: str = "gpt-4.1-mini", detail: str = "auto") -> int:
    """Return the input tokens `model` charges for one `width` x `height` image at `detail`.

    A dated model name ("gpt-4.1-mini-2025-04-14") prices as its family. Raises
    ValueError for a size that is not positive, an unknown `detail`, or a model
    neither rule names.
    """
    if detail not in DETAILS:
        raise ValueError(f"image detail must be one of {', '.join(DETAILS)}, not {detail!r}")
    family = model_family(model)
    if family in PATCH_MULTIPLIERS_PERCENT:
        return patch_count(width, height) * PATCH_MULTIPLIERS_PERCENT[family] // 100
    base, per_tile = TILE_PRICES[family]
    _check_size(width, height)
    if detail == "low":
        return base
    return base + per_tile * tile_count(width, height)


def model_family(model: str) -> str:
    """Return the priced model name `model` is, with or without a snapshot date.

    Raises ValueError if neither rule knows the model.
    """
    family = _DATED.sub("", model)
    if family in PATCH_MULTIPLIERS_PERCENT or family in TILE_PRICES:
        return family
    raise ValueError(f"no image price is known for the model {model!r}")


def patch_count(width: int, height: int) -> int:
    """Return the 32 px patches the patch rule bills for a `width` x `height` image.

    Raises ValueError for a size that is not positive.
    """
    _check_size(width, height)
    patches = _patches(width, height)
    if patches <= MAX_PATCHES:
        return patches
    shrink = math.sqrt(PATCH_PX * PATCH_PX * MAX_PATCHES / (width * height))
    across, down = width * shrink / PATCH_PX, height * shrink / PATCH_PX
    # Shrink a little more so the limiting side is covered by whole patches; a side
    # thinner than one patch keeps one (the documented formula would make it zero).
    shrink *= min(max(1, math.floor(across)) / across, max(1, math.floor(down)) / down)
    scaled = _patches(max(1, math.floor(width * shrink)), max(1, math.floor(height * shrink)))
    return min(scaled, MAX_PATCHES)


def tile_count(width: int, height: int) -> int:
    """Return the 512 px tiles the tile rule bills for a `width` x `height` image at high detail.

    Raises ValueError for a size that is not positive.
    """
    _check_size(width, height)
    # Exact fractions: a side scaled to exactly 1536 px must count 3 tiles, not 4.
    w, h = Fraction(width), Fraction(height)
    if max(w, h) > TILE_FIT_PX:
        scale = TILE_FIT_PX / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > TILE_SHORT_SIDE_PX:
        scale = TILE_SHORT_SIDE_PX / min(w, h)
        w, h = w * scale, h * scale
    return math.ceil(w / TILE_PX) * math.ceil(h / TILE_PX)


def _patches(width: int, height: int) -> int:
    return -(-width // PATCH_PX) * -(-height // PATCH_PX)


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"an image must be at least 1 x 1 px, not {width} x {height}")
