"""Training losses against independent numpy computations on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spsr_cli.train.losses import (
    GradientMapLoss,
    GradientVarianceLoss,
    PerceptualLoss,
    RelativisticAverageGANLoss,
    SecondOrderGradientLoss,
)


def _conv3x3_np(img: np.ndarray, kernel: list[list[float]], padding: int) -> np.ndarray:
    """Cross-correlation of a 2-D image with a 3x3 kernel and zero padding, by loops."""
    padded = np.pad(img, padding)
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            out[y, x] = sum(padded[y + dy, x + dx] * kernel[dy][dx] for dy in range(3) for dx in range(3))
    return out


def _spsr_grad_np(img: np.ndarray, padding: int) -> np.ndarray:
    v = _conv3x3_np(img, [[0, -1, 0], [0, 0, 0], [0, 1, 0]], padding)
    h = _conv3x3_np(img, [[0, 0, 0], [-1, 0, 1], [0, 0, 0]], padding)
    return np.sqrt(v**2 + h**2 + 1e-6)


def _patch_var_np(g: np.ndarray, n: int) -> np.ndarray:
    rows, cols = g.shape[0] // n, g.shape[1] // n
    return np.array(
        [[np.var(g[r * n : r * n + n, c * n : c * n + n], ddof=1) for c in range(cols)] for r in range(rows)]
    )


def _gv_np(sr: np.ndarray, hr: np.ndarray, n: int, l1: bool = False) -> float:
    sobel_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    sobel_y = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
    total = 0.0
    for kernel in (sobel_x, sobel_y):
        a = _patch_var_np(_conv3x3_np(sr, kernel, 1), n)
        b = _patch_var_np(_conv3x3_np(hr, kernel, 1), n)
        total += np.mean(np.abs(a - b)) if l1 else np.mean((a - b) ** 2)
    return float(total)


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64), torch.rand(
        1, 1, 4, 4, generator=g, dtype=torch.float64
    )


def test_gradient_variance_matches_numpy(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    expected = _gv_np(sr[0, 0].numpy(), hr[0, 0].numpy(), 2)
    assert GradientVarianceLoss(patch_size=2)(sr, hr).item() == pytest.approx(expected, rel=1e-10)
    expected_l1 = _gv_np(sr[0, 0].numpy(), hr[0, 0].numpy(), 2, l1=True)
    assert GradientVarianceLoss(patch_size=2, criterion="l1")(sr, hr).item() == pytest.approx(expected_l1, rel=1e-10)


def test_gradient_variance_uses_grayscale_for_rgb() -> None:
    g = torch.Generator().manual_seed(2)
    sr = torch.rand(1, 3, 4, 6, generator=g, dtype=torch.float64)
    hr = torch.rand(1, 3, 4, 6, generator=g, dtype=torch.float64)
    weights = np.array([0.299, 0.587, 0.114]).reshape(3, 1, 1)
    gray_sr, gray_hr = (sr[0].numpy() * weights).sum(0), (hr[0].numpy() * weights).sum(0)
    expected = _gv_np(gray_sr, gray_hr, 2)
    assert GradientVarianceLoss(patch_size=2)(sr, hr).item() == pytest.approx(expected, rel=1e-10)


def test_gradient_variance_zero_for_identical_and_differentiable() -> None:
    hr = torch.rand(2, 3, 16, 16)
    loss = GradientVarianceLoss(patch_size=8)
    assert loss(hr, hr.clone()).item() == 0.0
    sr = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss(sr, hr).backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


def test_gradient_variance_rejects_small_images_and_bad_options() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        GradientVarianceLoss(patch_size=8)(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="criterion"):
        GradientVarianceLoss(criterion="huber")
    with pytest.raises(ValueError, match="same shape"):
        GradientVarianceLoss(patch_size=2)(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 6))


def test_second_order_gradient_matches_numpy(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    a = _spsr_grad_np(_spsr_grad_np(sr[0, 0].numpy(), 1), 1)
    b = _spsr_grad_np(_spsr_grad_np(hr[0, 0].numpy(), 1), 1)
    assert SecondOrderGradientLoss()(sr, hr).item() == pytest.approx(float(np.mean(np.abs(a - b))), rel=1e-10)
    assert SecondOrderGradientLoss()(hr, hr.clone()).item() == 0.0


def test_gradient_map_loss_matches_numpy_with_padding_two(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = pair
    a, b = _spsr_grad_np(sr[0, 0].numpy(), 2), _spsr_grad_np(hr[0, 0].numpy(), 2)
    assert a.shape == (6, 6)  # padding 2 with a 3x3 kernel: one pixel larger on each side
    assert GradientMapLoss()(sr, hr).item() == pytest.approx(float(np.mean((a - b) ** 2)), rel=1e-10)
    assert GradientMapLoss()(hr, hr.clone()).item() == 0.0


@pytest.mark.parametrize("loss", [SecondOrderGradientLoss(), GradientMapLoss()])
def test_gradient_losses_are_differentiable(loss: nn.Module) -> None:
    sr = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss(sr, torch.rand(2, 3, 8, 8)).backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


def _bce_np(x: np.ndarray, target: float) -> float:
    p = 1 / (1 + np.exp(-x))
    return float(np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))))


def test_relativistic_gan_matches_formula() -> None:
    real = torch.tensor([[1.5], [-0.3], [0.7]], dtype=torch.float64)
    fake = torch.tensor([[-1.0], [0.2], [0.4]], dtype=torch.float64)
    r, f = real.numpy(), fake.numpy()
    real_rel, fake_rel = r - f.mean(), f - r.mean()
    gan = RelativisticAverageGANLoss()
    expected_d = (_bce_np(real_rel, 1.0) + _bce_np(fake_rel, 0.0)) / 2
    expected_g = (_bce_np(real_rel, 0.0) + _bce_np(fake_rel, 1.0)) / 2
    assert gan.discriminator_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-12)
    assert gan.generator_loss(real, fake).item() == pytest.approx(expected_g, rel=1e-12)
    assert gan(real, fake).item() == pytest.approx(expected_g, rel=1e-12)


def test_relativistic_gan_gradients_push_fake_up_for_generator() -> None:
    real = torch.randn(4, 1)
    fake = torch.randn(4, 1, requires_grad=True)
    RelativisticAverageGANLoss().generator_loss(real, fake).backward()
    assert fake.grad is not None and (fake.grad < 0).all()  # raising fake logits lowers the G loss


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def test_perceptual_loss_normalises_and_freezes() -> None:
    backbone = _TinyBackbone()
    loss = PerceptualLoss(backbone=backbone).train()
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    sr = torch.rand(2, 3, 8, 8, requires_grad=True)
    hr = torch.rand(2, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = (backbone((sr - mean) / std) - backbone((hr - mean) / std)).abs().mean()
    value = loss(sr, hr)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    assert loss(hr, hr.clone()).item() == 0.0
