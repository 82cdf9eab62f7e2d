"""Inference settings shared by ``spsr upscale``, ``spsr eval`` and training validation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

from spsr_cli.errors import UsageError

Precision = Literal["fp32", "fp16", "bf16"]
Backend = Literal["auto", "torch", "openvino"]

#: The smallest tile worth running: each tile is computed with ``tile_overlap`` pixels of context on
#: every side, so a tile of ``t`` pixels costs ``((t + 2 * overlap) / t) ** 2`` times its own area
#: (4x at 32 with the default overlap of 16; about 1000x at 1).
MIN_TILE = 32

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a generator over an image.

    Attributes:
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``fp16`` or ``bf16``; ``None`` picks the fastest accurate one:
            fp16 on CUDA, bf16 on CPUs where it is faster for the backend (measured: AMX or
            AVX512-BF16, both backends; :func:`~spsr_cli.engine.device.resolve_dtype`), fp32
            elsewhere. fp16 is never used on CPU.
        tile: tile edge in input pixels; ``"auto"`` picks from free memory (and the image's
            own output size), ``0`` or ``None`` runs the whole image at once.
        tile_overlap: input pixels of real context around each tile (cropped away); ``None``: the
            model's own (``config.tile_context``: 16 for SPSR and RRDBNet, 32 for DAT, the exact
            receptive radius for SRVGGNetCompact).
        memory_limit: the most bytes one image may take (its output, the write and the
            tiles' working set); ``None`` means the memory available when it starts.
        compile: run the network through ``torch.compile`` (slow first call per tile shape).
        backend: ``torch`` (PyTorch eager, any device; the default here, as training and
            validation need), ``openvino`` (CPU only; converted once and cached) or ``auto``
            (OpenVINO on the CPU where it is installed, else torch: what ``spsr upscale``,
            ``eval``, ``compare`` and :func:`spsr_cli.upscale` default to). See
            :mod:`spsr_cli.engine.backends`.
    """

    device: str = "auto"
    precision: Union[Precision, None] = None
    tile: Union[int, Literal["auto"], None] = "auto"
    tile_overlap: Union[int, None] = None
    memory_limit: Union[int, None] = None
    compile: bool = False
    backend: Backend = "torch"


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5 GB"``, ``"1000000"`` -> bytes (binary units: G = 2**30)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise UsageError(f"memory size {text!r} is not understood; use a number with K, M, G or T, such as 8G or 512M")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise UsageError(f"memory size {text!r} must be positive")
    return value
