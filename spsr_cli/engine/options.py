"""Inference settings shared by ``spsr upscale``, ``spsr eval`` and training validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a generator over an image.

    Attributes:
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``fp16`` or ``bf16``; ``None`` means fp16 on CUDA and fp32
            elsewhere. Half precision is never used on CPU.
        tile: tile edge in input pixels; ``"auto"`` picks from free memory, ``0`` or
            ``None`` runs the whole image at once.
        tile_overlap: input pixels shared by neighbouring tiles (blended away).
    """

    device: str = "auto"
    precision: Union[Precision, None] = None
    tile: Union[int, Literal["auto"], None] = "auto"
    tile_overlap: int = 16
