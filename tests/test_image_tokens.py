"""The image token estimator against OpenAI's documented examples and the issue's figures."""

from __future__ import annotations

import pytest

from llm.image_tokens import MAX_PATCHES, image_tokens, model_family, patch_count, tile_count


@pytest.mark.parametrize(
    ("size", "patches"),
    [
        ((1024, 1024), 1024),  # OpenAI's example: under the limit, counted as is
        ((1800, 2400), 1452),  # OpenAI's example: scaled to 1056 x 1408, 33 x 44 patches
        ((1920, 1080), 1508),  # scaled to 1650 x 928: 52 x 29, not the 1536 cap
        ((1365, 768), 1032),
        ((960, 540), 510),
        ((1, 1), 1),
    ],
)
def test_patch_count_follows_the_documented_examples(size: tuple[int, int], patches: int) -> None:
    assert patch_count(*size) == patches


@pytest.mark.parametrize(
    ("size", "model", "tokens"),
    [
        ((1920, 1080), "gpt-4.1-mini", 2442),  # the seed's full-size photo: 1508 x 1.62
        ((1365, 768), "gpt-4.1-mini", 1671),  # the frame service's 768 px short side: 1032 x 1.62
        ((960, 540), "gpt-4.1-mini", 826),  # 510 x 1.62, under a third of the seed's price
        ((2400, 1800), "gpt-4.1-mini", 2352),  # the forum's "2,352.24 calculated by formula"
        ((1024, 1024), "gpt-4.1-nano", 2519),  # 1024 x 2.46
        ((1024, 1024), "o4-mini", 1761),  # 1024 x 1.72
    ],
)
def test_patch_models_multiply_and_round_down(
    size: tuple[int, int], model: str, tokens: int
) -> None:
    assert image_tokens(*size, model=model) == tokens


def test_patch_models_price_every_detail_alike() -> None:
    prices = {image_tokens(1920, 1080, model="gpt-4.1-mini", detail=d) for d in ("low", "high")}
    assert prices == {2442}


@pytest.mark.parametrize(
    "size", [(4000, 3000), (12000, 9000), (6000, 20), (100_000, 32), (32, 100_000), (1537, 1537)]
)
def test_patches_never_pass_the_cap(size: tuple[int, int]) -> None:
    assert 1 <= patch_count(*size) <= MAX_PATCHES


@pytest.mark.parametrize(
    ("size", "model", "detail", "tokens"),
    [
        ((1024, 1024), "gpt-4o", "high", 765),  # OpenAI's example: 768 x 768, 4 tiles
        ((2048, 4096), "gpt-4o", "high", 1105),  # OpenAI's example: 768 x 1536, 6 tiles
        ((1920, 1080), "gpt-4.1", "auto", 1105),  # auto counted as high: 1365 x 768, 6 tiles
        ((1920, 1080), "gpt-4o", "low", 85),
        ((128, 64), "gpt-4o", "high", 255),  # small images are not scaled up: one tile
        ((1024, 1024), "gpt-4o-mini", "low", 2833),
        ((1024, 1024), "gpt-4o-mini", "high", 2833 + 4 * 5667),
    ],
)
def test_tile_models_follow_the_documented_examples(
    size: tuple[int, int], model: str, detail: str, tokens: int
) -> None:
    assert image_tokens(*size, model=model, detail=detail) == tokens


def test_a_side_scaled_to_whole_tiles_counts_no_extra_tile() -> None:
    assert tile_count(2048, 4096) == 2 * 3


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
    ],
)
def test_dated_model_names_price_as_their_family(model: str, family: str) -> None:
    assert model_family(model) == family


@pytest.mark.parametrize(
    ("width", "height", "model", "detail"),
    [
        (0, 10, "gpt-4.1-mini", "auto"),
        (10, -1, "gpt-4o", "high"),
        (10, 10, "fake-story", "auto"),
        (10, 10, "gpt-4.1-minimal", "auto"),
        (10, 10, "gpt-4o", "medium"),
    ],
)
def test_unpriceable_questions_are_value_errors(
    width: int, height: int, model: str, detail: str
) -> None:
    with pytest.raises(ValueError):
        image_tokens(width, height, model=model, detail=detail)
