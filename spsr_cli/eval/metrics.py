"""PSNR and SSIM exactly as the SR papers' evaluation scripts compute them.

Two protocols (see :data:`PROTOCOLS`):

``spsr-paper``
    The SPSR paper's MATLAB toolbox: Y = ``rgb2ycbcr`` of the uint8 image,
    rounded to integers; 4 pixels cut from every border; PSNR on that; SSIM as
    Wang's ``ssim.m``, which first box-filters and subsamples both images by
    ``f = max(1, round(min(H, W) / 256))``.
``basicsr``
    BasicSR's Python metrics: Y as a float (no rounding), ``scale`` pixels cut
    from every border, SSIM on the full-resolution Y (no subsampling).

All functions take numpy ``uint8`` images, H x W x 3 (RGB) or H x W (grey).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spsr_cli.errors import UsageError


@dataclass(frozen=True)
class Protocol:
    """How PSNR/SSIM are computed.

    Attributes:
        name: the ``--protocol`` value.
        round_y: round the luma to integers (MATLAB's uint8 ``rgb2ycbcr``).
        border: pixels removed from every side; ``None`` means the scale factor.
        ssim_downsample: Wang's ``ssim.m`` box-filter + subsample by ``round(min(H, W) / 256)``.
    """

    name: str
    round_y: bool
    border: int | None
    ssim_downsample: bool

    def border_for(self, scale: int) -> int:
        return scale if self.border is None else self.border


PROTOCOLS: dict[str, Protocol] = {
    "spsr-paper": Protocol(name="spsr-paper", round_y=True, border=4, ssim_downsample=True),
    "basicsr": Protocol(name="basicsr", round_y=False, border=None, ssim_downsample=False),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UsageError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None


_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def rgb_to_y(image: np.ndarray, *, rounded: bool) -> np.ndarray:
    """ITU-R BT.601 luma in [16, 235] as MATLAB's ``rgb2ycbcr`` gives it for uint8 RGB.

    ``image``: H x W x 3 uint8 RGB, or H x W uint8 grey (returned as is: MATLAB
    scripts skip the conversion for single-channel images). Returns H x W float64.
    """
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected H x W x 3 RGB or H x W grey, got shape {image.shape}")
    y = image.astype(np.float64) @ _Y_WEIGHTS + 16.0
    return np.floor(y + 0.5) if rounded else y


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from every side of an H x W (x C) array."""
    if border <= 0:
        return image
    return image[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """PSNR in dB of two same-shape arrays on a 0..``data_range`` scale (inf if identical)."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range * data_range / mse))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (the 2-D window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """MATLAB ``filter2(g * g', x, 'valid')`` for a stack N x 1 x H x W, done separably."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def _box_subsample(image: torch.Tensor, f: int) -> torch.Tensor:
    """MATLAB ``imfilter(img, ones(f)/f^2, 'symmetric', 'same')`` then ``img(1:f:end, 1:f:end)``."""
    centre = (f + 1) // 2  # MATLAB's (1-based) kernel centre
    before, after = centre - 1, f - centre
    x = _sym_pad(image[None, None], before, after)
    x = F.avg_pool2d(x, kernel_size=f, stride=1)
    return x[0, 0, ::f, ::f]


def _sym_pad(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Symmetric (edge-repeating) padding of the last two axes, as MATLAB's 'symmetric'."""
    arr = np.pad(x.numpy(), ((0, 0), (0, 0), (before, after), (before, after)), mode="symmetric")
    return torch.from_numpy(arr)


def ssim(a: np.ndarray, b: np.ndarray, *, downsample: bool, data_range: float = 255.0) -> float:
    """Mean SSIM of two H x W arrays (Wang et al.; 11 x 11 Gaussian window, sigma 1.5, 'valid').

    ``downsample=True`` first box-filters and subsamples by ``max(1, round(min(H, W) / 256))``
    as Wang's reference ``ssim.m`` does.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SSIM needs two equal H x W arrays, got {a.shape} and {b.shape}")
    x = torch.from_numpy(a.astype(np.float64))
    y = torch.from_numpy(b.astype(np.float64))
    if downsample:
        f = max(1, int(np.floor(min(a.shape) / 256 + 0.5)))
        if f > 1:
            x, y = _box_subsample(x, f), _box_subsample(y, f)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    stack = torch.stack([x, y, x * x, y * y, x * y])[:, None]
    mu_x, mu_y, xx, yy, xy = _filter_valid(stack, _gaussian_1d())[:, 0]
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float((num / den).mean())


def psnr_ssim(sr: np.ndarray, hr: np.ndarray, *, protocol: Protocol, scale: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of uint8 images ``sr`` and ``hr`` (same H x W (x 3)) under ``protocol``."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR {sr.shape} and HR {hr.shape} differ in shape")
    border = protocol.border_for(scale)
    y_sr = shave(rgb_to_y(sr, rounded=protocol.round_y), border)
    y_hr = shave(rgb_to_y(hr, rounded=protocol.round_y), border)
    return psnr(y_sr, y_hr), ssim(y_sr, y_hr, downsample=protocol.ssim_downsample)


__all__ = ["PROTOCOLS", "Protocol", "get_protocol", "psnr", "psnr_ssim", "rgb_to_y", "shave", "ssim"]
