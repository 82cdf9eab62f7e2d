"""``from spsr_cli import upscale``: one in-memory image in, its super-resolved copy out.

The same engine as ``spsr upscale``: the memory check and tile choice of
:class:`~spsr_cli.engine.tiling.Upscaler`, fp16 on CUDA and bf16 on CPUs where it is
faster for the backend unless ``precision`` says otherwise, OpenVINO on the CPU where it is installed unless
``backend`` says otherwise, alpha resized separately. The loaded model and
its upscaler are kept for the next call with the same settings.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Literal, Optional, Union

import numpy as np
import PIL.Image

from spsr_cli.engine.options import Backend, InferenceOptions, Precision
from spsr_cli.errors import UsageError
from spsr_cli.io.images import Image, image_from_pil, image_to_array

if TYPE_CHECKING:
    from spsr_cli.engine.tiling import Upscaler

ArrayOrPIL = Union[np.ndarray, PIL.Image.Image]


@functools.lru_cache(maxsize=2)
def _upscaler(model: Optional[str], options: InferenceOptions) -> Upscaler:
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.weights.loader import load_generator

    return Upscaler(load_generator(model), options)


def _from_array(arr: np.ndarray) -> tuple[Image, str]:
    """An H x W, H x W x 3 or H x W x 4 array -> (Image, how to give it back)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise UsageError(f"upscale() takes an H x W, H x W x 3 or H x W x 4 array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        planes, depth, kind = arr.astype(np.float32) / 255.0, 8, "uint8"
    elif arr.dtype == np.uint16:
        planes, depth, kind = arr.astype(np.float32) / 65535.0, 16, "uint16"
    elif arr.dtype.kind == "f":
        planes, depth, kind = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0), 16, "float"
    else:
        raise UsageError(f"upscale() takes uint8, uint16 or float arrays (in [0, 1]), got {arr.dtype}")
    gray = planes.shape[2] == 1
    rgb = np.repeat(planes, 3, axis=2) if gray else np.ascontiguousarray(planes[..., :3])
    alpha = np.ascontiguousarray(planes[..., 3]) if planes.shape[2] == 4 else None
    return Image(rgb=rgb, alpha=alpha, bit_depth=depth, grayscale=gray), kind


def _check_arguments(**given: object) -> None:
    """Refuse arguments of the wrong type or range with a :class:`UsageError` naming them (not a
    TypeError or ZeroDivisionError from deep inside)."""
    model, device, tile = given["model"], given["device"], given["tile"]
    overlap, memory = given["tile_overlap"], given["max_memory"]
    whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise UsageError(f"upscale(model=...) takes a registry name or a weights path, got {type(model).__name__}")
    if not isinstance(device, str):
        raise UsageError(f"upscale(device=...) takes 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if not (tile is None or tile == "auto" or (whole(tile) and tile >= 0)):
        raise UsageError(f"upscale(tile=...) takes a whole number of pixels >= 0, 'auto' or None, got {tile!r}")
    if not (overlap is None or (whole(overlap) and overlap >= 0)):
        raise UsageError(f"upscale(tile_overlap=...) takes a whole number of pixels >= 0 or None, got {overlap!r}")
    if not (memory is None or (whole(memory) and memory > 0)):
        raise UsageError(f"upscale(max_memory=...) takes a positive number of bytes or None, got {memory!r}")


def upscale(
    image: ArrayOrPIL,
    *,
    model: Optional[str] = None,
    device: str = "auto",
    precision: Optional[Precision] = None,
    tile: Union[int, Literal["auto"], None] = "auto",
    tile_overlap: Optional[int] = None,
    outscale: Optional[float] = None,
    max_memory: Optional[int] = None,
    backend: Backend = "auto",
) -> ArrayOrPIL:
    """Super-resolve one image with SPSR; returns the same kind of image, ``scale`` times larger.

    Args:
        image: a PIL image (any mode; returned as RGB, RGBA, L or LA) or a NumPy array:
            H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA); uint8, uint16 or float in [0, 1].
            The result has the input's layout and dtype (float comes back as float32 in [0, 1]).
        model: a registry name or a ``.safetensors``/``.pth`` path; None: the default model.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``fp16`` or ``bf16``; None picks as ``spsr upscale`` does.
        tile: tile edge in input pixels, ``"auto"`` (from free memory) or 0/None for whole images.
        tile_overlap: input pixels of context around each tile; None: the model's own.
        outscale: final scale if not the model's (e.g. 2).
        max_memory: the most bytes the image may take (default: what is available).
        backend: ``auto`` (OpenVINO on the CPU where ``spsr-cli[openvino]`` is installed, else
            torch), ``torch`` or ``openvino`` (CPU only); see :mod:`spsr_cli.engine.backends`.

    Raises :class:`~spsr_cli.engine.tiling.MemoryBudgetError` when the image cannot fit, and
    :class:`~spsr_cli.errors.UsageError` for an unsupported input.
    """
    from spsr_cli.engine.batch import check_outscale
    from spsr_cli.engine.pipeline import upscale_image

    check_outscale(outscale)
    _check_arguments(model=model, device=device, tile=tile, tile_overlap=tile_overlap, max_memory=max_memory)
    options = InferenceOptions(
        device=device,
        precision=precision,
        tile=tile,
        tile_overlap=tile_overlap,
        memory_limit=max_memory,
        backend=backend,
    )
    if isinstance(image, PIL.Image.Image):
        decoded, kind = image_from_pil(image), "pil"
    elif isinstance(image, np.ndarray):
        decoded, kind = _from_array(image)
    else:
        raise UsageError(f"upscale() takes a PIL image or a NumPy array, got {type(image).__name__}")
    out = upscale_image(decoded, _upscaler(model, options), outscale=outscale)
    samples = image_to_array(out)
    if kind == "pil":
        if samples.dtype == np.uint16:  # Pillow has no 16-bit colour modes
            samples = (samples.astype(np.uint32) * 255 + 32767) // 65535
        return PIL.Image.fromarray(samples.astype(np.uint8))
    if kind == "float":
        return samples.astype(np.float32) / np.float32(65535)
    if image.ndim == 3 and image.shape[2] == 1:
        samples = samples[..., None]
    return samples
