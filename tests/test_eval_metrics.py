"""spsr_cli.eval.metrics: Y conversion, PSNR, SSIM (Wang's ssim.m) and the two protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spsr_cli.errors import UsageError
from spsr_cli.eval.metrics import PROTOCOLS, get_protocol, psnr, psnr_ssim, rgb_to_y, shave, ssim


def _naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Direct per-window SSIM (11 x 11 Gaussian, sigma 1.5, valid windows), for cross-checking."""
    x = np.arange(11) - 5
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * pa * pa).sum() - ma * ma
            vb = (w * pb * pb).sum() - mb * mb
            cov = (w * pa * pb).sum() - ma * mb
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_rgb_to_y_matches_matlab_rgb2ycbcr() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], np.uint8)
    y = rgb_to_y(img, rounded=False)
    np.testing.assert_allclose(y[0, :3], [16.0, 235.0, 16 + 65.481], atol=1e-9)
    np.testing.assert_allclose(y[0, 3], 16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255)
    assert rgb_to_y(img, rounded=True)[0, 3] == round(y[0, 3])
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(rgb_to_y(grey, rounded=True), grey)


def test_psnr_known_values() -> None:
    a = np.zeros((4, 4))
    b = np.full((4, 4), 255.0)
    assert psnr(a, b) == pytest.approx(0.0)
    c = a.copy()
    c[0, 0] = 16  # MSE = 256 / 16 = 16
    assert psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 16))
    assert psnr(a, a) == math.inf


def test_ssim_matches_direct_window_computation() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).round()
    assert ssim(a, b, downsample=False) == pytest.approx(_naive_ssim(a, b), abs=1e-12)
    assert ssim(a, a, downsample=False) == pytest.approx(1.0)


def test_ssim_downsampling_is_box_filter_then_subsample() -> None:
    """For min(H, W) = 512, ssim.m averages 2 x 2 blocks first (f = round(512/256) = 2)."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (512, 520)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).round()

    def blocks(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        return x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    assert ssim(a, b, downsample=True) == pytest.approx(ssim(blocks(a), blocks(b), downsample=False), abs=1e-12)
    # a 2 x 2 checkerboard vanishes under the box filter, so only full-resolution SSIM sees it
    base = rng.integers(20, 236, (512, 512)).astype(np.float64)
    checker = np.where((np.indices(base.shape).sum(axis=0) % 2) == 0, 10.0, -10.0)
    assert ssim(base, base + checker, downsample=True) == pytest.approx(1.0)
    assert ssim(base, base + checker, downsample=False) < 0.99
    # below 384 pixels f = 1: no change
    small_a, small_b = a[:300, :300], b[:300, :300]
    assert ssim(small_a, small_b, downsample=True) == ssim(small_a, small_b, downsample=False)


def test_protocols_differ_as_documented() -> None:
    paper, basicsr = PROTOCOLS["spsr-paper"], PROTOCOLS["basicsr"]
    assert (paper.round_y, paper.border_for(4), paper.ssim_downsample) == (True, 4, True)
    assert (basicsr.round_y, basicsr.border_for(3), basicsr.ssim_downsample) == (False, 3, False)
    with pytest.raises(UsageError, match="spsr-paper"):
        get_protocol("matlab")


def test_psnr_ssim_shaves_border() -> None:
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    sr = hr.copy()
    sr[:4] = 0  # damage only the 4-pixel border
    p, s = psnr_ssim(sr, hr, protocol=PROTOCOLS["spsr-paper"], scale=4)
    assert p == math.inf and s == pytest.approx(1.0)
    p2, _ = psnr_ssim(sr, hr, protocol=PROTOCOLS["spsr-paper"], scale=2)
    assert p2 == math.inf  # border stays 4 in the paper protocol
    p3, _ = psnr_ssim(sr, hr, protocol=PROTOCOLS["basicsr"], scale=2)
    assert p3 < 40  # basicsr shaves only `scale` pixels
    assert shave(np.zeros((10, 10)), 2).shape == (6, 6)
