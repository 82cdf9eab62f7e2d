"""NIQE, the no-reference "Natural Image Quality Evaluator" (Mittal, Soundararajan and Bovik,
IEEE Signal Processing Letters 2013), as its MATLAB release ``computequality.m`` computes it.

Written from the paper and the published description of the MATLAB code:

* the image (grey, float, 0..255) is cropped to whole 96 x 96 blocks;
* at two scales (full, then MATLAB-bicubic half size with 48 x 48 blocks) the local mean and
  deviation come from a 7 x 7 Gaussian (sigma 7/6, edge-replicated border) and give the
  MSCN coefficients ``(I - mu) / (sigma + 1)``;
* per block, 18 features: the shape and mean spread of an asymmetric generalised Gaussian
  (AGGD, moment matching over shapes 0.2:0.001:10) fitted to the coefficients, and shape,
  mean, left and right spread of AGGDs fitted to the products of each coefficient with its
  neighbour in four directions (circular shifts (0,1), (1,0), (1,1), (1,-1));
* the 36 features of all blocks give a mean (NaNs ignored per feature) and covariance
  (blocks with a NaN dropped); the score is the Mahalanobis-like distance
  ``sqrt((mu_p - mu)' pinv((C_p + C) / 2) (mu_p - mu))`` to the pristine model ``mu_p, C_p``.

The pristine model is data (``niqe-pristine-params`` in the weights registry: the
``niqe_pris_params.npz`` inside the BasicSR 1.4.2 source archive on PyPI, pinned by sha256),
loaded by :func:`spsr_cli.weights.niqe.load_niqe_model`.
The SR papers' toolbox (PIRM 2018, used by SPSR) scores the rounded MATLAB luma of the uint8
SR image with ``scale`` pixels shaved from each side: :func:`niqe_of_image` does that.
Lower is better.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from spsr_cli.eval.metrics import rgb_to_y, shave
from spsr_cli.io.imresize import imresize
from spsr_cli.weights.niqe import NIQEError, NIQEModel

BLOCK = 96
_SHAPES = np.arange(200, 10001, dtype=np.float64) / 1000.0  # MATLAB 0.2:0.001:10
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``: size x size float64 summing to 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def _gamma(x: np.ndarray) -> np.ndarray:
    return np.exp(torch.lgamma(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy())


_R_SHAPES = _gamma(2 / _SHAPES) ** 2 / (_gamma(1 / _SHAPES) * _gamma(3 / _SHAPES))


def aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit of each row of ``samples`` (N x M float64).

    Returns (shape alpha, left spread beta_l, right spread beta_r), each (N,). A row without
    negative (or positive) samples gives NaN, as MATLAB's ``mean([])`` does.
    """
    neg, pos = samples < 0, samples > 0
    sq = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((sq * neg).sum(1) / neg.sum(1))
        right = np.sqrt((sq * pos).sum(1) / pos.sum(1))
        ratio = left / right
        rhat = np.abs(samples).mean(1) ** 2 / sq.mean(1)
        rhat_norm = rhat * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    best = np.argmin((_R_SHAPES[None, :] - rhat_norm[:, None]) ** 2, axis=1)
    alpha = _SHAPES[best]
    alpha = np.where(np.isnan(rhat_norm), np.nan, alpha)
    spread = np.sqrt(_gamma(1 / alpha) / _gamma(3 / alpha))
    return alpha, left * spread, right * spread


def _mscn(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(I - mu) / (sigma + 1) with mu, sigma from ``window`` over an edge-replicated border."""
    pad = window.shape[0] // 2
    x = torch.from_numpy(image)[None, None]
    k = torch.from_numpy(window)[None, None]
    stack = torch.cat([x, x * x])
    local = F.conv2d(F.pad(stack, (pad, pad, pad, pad), mode="replicate"), k)
    mu, mean_sq = local[0, 0], local[1, 0]
    sigma = torch.sqrt(torch.abs(mean_sq - mu * mu))
    return ((x[0, 0] - mu) / (sigma + 1)).numpy()


def _block_features(mscn: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    """(rows * cols) x 18 features of the size x size blocks of ``mscn``."""
    blocks = mscn.reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(rows * cols, size, size)
    alpha, left, right = aggd_fit(blocks.reshape(len(blocks), -1))
    columns = [alpha, (left + right) / 2]
    for shift in _SHIFTS:
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))  # MATLAB circshift within each block
        a, bl, br = aggd_fit(pair.reshape(len(blocks), -1))
        mean = (br - bl) * _gamma(2 / a) / _gamma(1 / a)
        columns += [a, mean, bl, br]
    return np.stack(columns, axis=1)


def niqe_features(image: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Per-block NIQE features of an H x W grey image (float, 0..255): (blocks) x 36 float64."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"NIQE takes an H x W grey image, got shape {image.shape}")
    rows, cols = image.shape[0] // block, image.shape[1] // block
    if rows == 0 or cols == 0:
        raise NIQEError(f"NIQE needs at least {block} x {block} pixels, got {image.shape[1]} x {image.shape[0]}")
    image = image[: rows * block, : cols * block]
    window = gaussian_window()
    first = _block_features(_mscn(image, window), rows, cols, block)
    half = imresize(image, 0.5)  # MATLAB bicubic, antialiased, float (no rounding)
    second = _block_features(_mscn(half, window), rows, cols, block // 2)
    return np.concatenate([first, second], axis=1)


def niqe(image: np.ndarray, model: NIQEModel) -> float:
    """NIQE of an H x W grey image (float or integer values on a 0..255 scale); lower is better."""
    feats = niqe_features(image)
    mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        raise NIQEError(f"NIQE needs at least 2 image blocks with finite features, got {len(complete)}")
    cov = np.cov(complete, rowvar=False)
    diff = model.mu - mu
    return float(math.sqrt(max(0.0, float(diff @ np.linalg.pinv((model.cov + cov) / 2) @ diff))))


def niqe_of_image(image: np.ndarray, model: NIQEModel, *, border: int) -> float:
    """NIQE as the PIRM / SPSR toolbox scores an SR result.

    ``image``: H x W x 3 uint8 RGB (or H x W uint8 grey). Scored on the rounded MATLAB luma
    (``rgb2ycbcr``) with ``border`` pixels removed from each side.
    """
    y = rgb_to_y(image, rounded=True)
    return niqe(shave(y, border), model)


__all__ = [
    "aggd_fit",
    "gaussian_window",
    "niqe",
    "niqe_features",
    "niqe_of_image",
]
