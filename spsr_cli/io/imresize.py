"""MATLAB-compatible bicubic ``imresize``.

This reproduces what MATLAB's ``imresize(img, scale, 'bicubic')`` returns, which
is how the standard SR benchmarks made their low-resolution images:

* the cubic convolution kernel with a = -0.5;
* when shrinking, the kernel is stretched by 1/scale (antialiasing);
* samples beyond the border repeat the edge pixel (MATLAB's
  ``indices = min(max(1, indices), in_length)``);
* output size ``ceil(scale * input)``; the height is resized first;
* a ``uint8`` image comes back ``uint8``, rounded half away from zero and clipped,
  after *each* of the two one-dimensional passes, as MATLAB does.

Written from the published description of the algorithm.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

ImageLike = Union[np.ndarray, torch.Tensor]


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5), support [-2, 2]."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def contributions(
    in_length: int, out_length: int, scale: float, *, antialias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and 0-based source indices for one axis: both ``out_length x P`` (float64, int64).

    Output pixel ``i`` is ``sum_p weights[i, p] * input[indices[i, p]]``.
    """
    kernel_width = 4.0
    stretch = scale < 1 and antialias
    if stretch:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based source coordinate
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if stretch else cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # out-of-range indices repeat the edge pixel, as MATLAB's imresize does:
    # indices = min(max(1, indices), in_length)
    idx0 = (idx.long() - 1).clamp(0, in_length - 1)
    keep = weights.ne(0).any(dim=0)
    return weights[:, keep], idx0[:, keep]


def output_size(in_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's rule: ``ceil(scale * size)`` per axis."""
    return tuple(int(math.ceil(scale * s)) for s in in_size)  # type: ignore[return-value]


def resize_matrix(in_length: int, out_length: int, scale: float, *, antialias: bool = True) -> torch.Tensor:
    """Dense ``out_length x in_length`` float64 matrix M with ``output = M @ input`` along one axis."""
    weights, idx = contributions(in_length, out_length, scale, antialias=antialias)
    rows = torch.arange(out_length)[:, None].expand_as(idx)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.index_put_((rows.reshape(-1), idx.reshape(-1)), weights.reshape(-1), accumulate=True)
    return matrix


def _resize_axis(
    x: torch.Tensor, axis: int, out_length: int, scale: float, *, antialias: bool, quantise: bool
) -> torch.Tensor:
    matrix = resize_matrix(x.shape[axis], out_length, scale, antialias=antialias).to(x.dtype)
    out = matrix @ x if axis == x.ndim - 2 else x @ matrix.T
    if quantise:
        out = _round_half_up(out).clamp_(0, 255)
    return out


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's uint8 conversion rounds half away from zero; below zero we clip to 0 anyway."""
    return torch.floor(x + 0.5)


def imresize_tensor(
    x: torch.Tensor,
    *,
    scale: float,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
    quantise: bool = False,
) -> torch.Tensor:
    """Resize the last two axes (H, W) of a float tensor (any leading shape, any range).

    ``scale`` sets the kernel (and, unless ``size`` is given, the output size
    ``ceil(scale * H) x ceil(scale * W)``). ``quantise=True`` rounds and clips to
    [0, 255] after each pass, as MATLAB does for uint8 images. Computed in float64
    for exactness; returned in the input's floating dtype.
    """
    if x.ndim < 2:
        raise ValueError(f"imresize needs at least 2 dimensions (H, W), got shape {tuple(x.shape)}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    h, w = x.shape[-2], x.shape[-1]
    out_h, out_w = size if size is not None else output_size((h, w), scale)
    y = x.to(torch.float64)
    y = _resize_axis(y, y.ndim - 2, out_h, scale, antialias=antialias, quantise=quantise)
    y = _resize_axis(y, y.ndim - 1, out_w, scale, antialias=antialias, quantise=quantise)
    return y.to(dtype)


def imresize(image: np.ndarray, scale: float, *, antialias: bool = True) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` for an H x W or H x W x C numpy image.

    ``uint8`` in -> ``uint8`` out (rounded and clipped after each pass, like MATLAB);
    float in -> float64 out, no rounding or clipping.
    """
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"imresize takes uint8 or float images, got {image.dtype}")
    t = torch.from_numpy(np.array(image, dtype=np.float64))  # a writable float64 copy
    if t.ndim == 3:
        t = t.permute(2, 0, 1)
    out = imresize_tensor(t, scale=scale, antialias=antialias, quantise=is_uint8)
    if out.ndim == 3:
        out = out.permute(1, 2, 0)
    result = out.numpy()
    return result.astype(np.uint8) if is_uint8 else result


def crop_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom/right of an H x W (x C) image so both sides divide by ``multiple``."""
    h, w = image.shape[:2]
    return image[: h - h % multiple, : w - w % multiple]


def bicubic_downscale(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Benchmark-style LR: crop ``hr`` to a multiple of ``scale``, then MATLAB-imresize by 1/scale."""
    return imresize(crop_to_multiple(hr, scale), 1.0 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """The benchmark tables' "Bicubic" row: MATLAB-imresize ``lr`` by ``scale``."""
    return imresize(lr, float(scale))


__all__ = [
    "bicubic_downscale",
    "bicubic_upscale",
    "contributions",
    "crop_to_multiple",
    "cubic",
    "imresize",
    "imresize_tensor",
    "output_size",
    "resize_matrix",
]
