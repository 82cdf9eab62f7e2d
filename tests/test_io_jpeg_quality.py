"""JPEG quality estimation from quantisation tables."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spsr_cli.io.jpeg_quality import STANDARD_LUMA, estimate_jpeg_quality, match_ijg_quality, scaled_table


def _photo(grey: bool = False) -> Image.Image:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64]
    data = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1) + rng.integers(0, 40, (48, 64, 3))
    image = Image.fromarray(data.clip(0, 255).astype(np.uint8))
    return image.convert("L") if grey else image


@pytest.mark.parametrize("quality", range(20, 96, 5))
def test_estimates_the_quality_of_files_saved_at_known_qualities(tmp_path: Path, quality: int) -> None:
    path = tmp_path / f"q{quality}.jpg"
    _photo().save(path, quality=quality)
    assert abs(estimate_jpeg_quality(path) - quality) <= 2
    assert abs(estimate_jpeg_quality(str(path)) - quality) <= 2
    with path.open("rb") as handle:
        assert abs(estimate_jpeg_quality(handle) - quality) <= 2


@pytest.mark.parametrize("quality", [23, 47, 51, 77])
def test_grey_jpeg_and_bytes(quality: int) -> None:
    buffer = io.BytesIO()
    _photo(grey=True).save(buffer, format="JPEG", quality=quality)
    assert abs(estimate_jpeg_quality(buffer.getvalue()) - quality) <= 2


def test_none_for_anything_that_is_not_a_readable_jpeg(tmp_path: Path) -> None:
    _photo().save(tmp_path / "a.png")
    (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert estimate_jpeg_quality(tmp_path / "a.png") is None
    assert estimate_jpeg_quality(tmp_path / "fake.jpg") is None
    assert estimate_jpeg_quality(tmp_path / "missing.jpg") is None
    assert estimate_jpeg_quality(b"") is None


def test_tables_follow_the_ijg_scaling() -> None:
    assert scaled_table(STANDARD_LUMA, 50).tolist() == STANDARD_LUMA.tolist()  # quality 50: the Annex K table
    assert scaled_table(STANDARD_LUMA, 100).tolist() == [1] * 64
    assert scaled_table(STANDARD_LUMA, 10)[0] == 80  # 16 * 5000/10 / 100
    custom = {0: (scaled_table(STANDARD_LUMA, 60) + 1).tolist()}  # an encoder with its own tables
    found = match_ijg_quality(custom)
    assert found is not None and not found.exact and abs(found.quality - 60) <= 3
    assert match_ijg_quality({}) is None
    with pytest.raises(ValueError, match="1..100"):
        scaled_table(STANDARD_LUMA, 0)
