"""Estimate the quality setting a JPEG file was saved with, from its quantisation tables.

Encoders built on the IJG library (libjpeg, libjpeg-turbo, Pillow, most web tools) scale the
two example tables of the JPEG standard (ITU-T T.81, Annex K) by a quality ``q`` in 1..100:
``s = 5000 / q`` below 50, else ``200 - 2 q``; each entry becomes ``(base * s + 50) // 100``,
clamped to 1..255. :func:`estimate_jpeg_quality` finds the ``q`` whose scaled tables lie
nearest to the file's (sum of absolute differences over the luma table and, when present,
the first chroma table). Files from encoders with their own tables (many cameras) get the
nearest IJG quality, with ``exact=False`` in :func:`match_ijg_quality`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

# fmt: off
#: Annex K.1, luminance, in natural (row-major) order, as Pillow's ``quantization`` gives it.
STANDARD_LUMA = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61,
        12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77,
        24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101,
        72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.int64,
)
# fmt: on

# fmt: off
#: Annex K.2, chrominance, natural order.
STANDARD_CHROMA = np.array(
    [
        17, 18, 24, 47, 99, 99, 99, 99,
        18, 21, 26, 66, 99, 99, 99, 99,
        24, 26, 56, 99, 99, 99, 99, 99,
        47, 66, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99,
    ],
    dtype=np.int64,
)
# fmt: on

Source = Union[str, "os.PathLike[str]", bytes, BinaryIO]


@dataclass(frozen=True)
class QualityEstimate:
    """``quality`` (1..100) of the nearest IJG tables; ``exact`` when the file's tables are exactly those."""

    quality: int
    exact: bool


def scaled_table(base: np.ndarray, quality: int) -> np.ndarray:
    """An Annex K ``base`` table (64 ints) scaled to IJG ``quality`` 1..100 (baseline: entries 1..255)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


def match_ijg_quality(tables: Mapping[int, Sequence[int]]) -> QualityEstimate | None:
    """The IJG quality nearest to ``tables`` (Pillow's ``Image.quantization``: table id -> 64 entries in
    natural order); None when there is no 64-entry luma table (id 0)."""
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    file_luma = np.asarray(luma, dtype=np.int64)
    chroma = tables.get(1)
    file_chroma = np.asarray(chroma, dtype=np.int64) if chroma is not None and len(chroma) == 64 else None
    best: tuple[int, int] | None = None  # (distance, quality)
    for quality in range(1, 101):
        distance = int(np.abs(scaled_table(STANDARD_LUMA, quality) - file_luma).sum())
        if file_chroma is not None:
            distance += int(np.abs(scaled_table(STANDARD_CHROMA, quality) - file_chroma).sum())
        if best is None or distance < best[0]:
            best = (distance, quality)
    assert best is not None
    return QualityEstimate(quality=best[1], exact=best[0] == 0)


def estimate_jpeg_quality(source: Source) -> int | None:
    """The quality (1..100) a JPEG was most likely saved with; None for anything that is not a
    readable JPEG (another format, a missing or corrupt file).

    ``source``: a path, the file's bytes, or a binary file object. Only the header is read.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        source = Path(source)
    try:
        with Image.open(source) as im:
            if im.format != "JPEG":
                return None
            tables = getattr(im, "quantization", None)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    found = match_ijg_quality(tables or {})
    return None if found is None else found.quality


__all__ = [
    "QualityEstimate",
    "STANDARD_CHROMA",
    "STANDARD_LUMA",
    "estimate_jpeg_quality",
    "match_ijg_quality",
    "scaled_table",
]
