"""Training losses for SPSR: gradient-space terms, relativistic GAN and perceptual loss.

Every loss takes N x C x H x W float tensors (any float dtype; images nominally in
[0, 1]) and returns a 0-dim tensor of the same dtype, differentiable with respect
to its first argument (the super-resolved image). Written from the papers:

* SPSR (Ma et al., CVPR 2020): :class:`GradientMapLoss` (MSE between padding-2
  gradient maps ``G'``) and the relativistic average GAN of ESRGAN
  (:class:`RelativisticAverageGANLoss`).
* Gradient Variance loss (Abrahamyan et al., ICASSP 2022):
  :class:`GradientVarianceLoss`.
* :class:`SecondOrderGradientLoss`: L1 between gradient maps of gradient maps.
* :class:`PerceptualLoss`: L1 between frozen backbone features (ESRGAN/SPSR use
  VGG19 conv5_4 before its ReLU; see :mod:`spsr_cli.weights.vgg`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spsr_cli.model.gradient import gradient_map

#: Sobel kernels (cross-correlation) of the GV paper: horizontal and vertical derivative.
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))
#: ITU-R BT.601 luma weights used to turn RGB into grayscale before the GV loss.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
#: ImageNet statistics for torchvision-style backbones (inputs RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CRITERIA = {"l1": F.l1_loss, "mse": F.mse_loss}


def _check_pair(name: str, sr: torch.Tensor, hr: torch.Tensor) -> None:
    if sr.dim() != 4 or sr.shape != hr.shape:
        raise ValueError(
            f"{name} expects two N x C x H x W tensors of the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )


def _criterion(name: str) -> str:
    if name not in _CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; use one of {sorted(_CRITERIA)}")
    return name


def sobel_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives of every channel, zero padding 1.

    Args:
        x: N x C x H x W float tensor.

    Returns:
        ``(gx, gy)``, each N x C x H x W, same dtype/device as ``x``.
    """
    n, c, h, w = x.shape
    kernels = torch.tensor((SOBEL_X, SOBEL_Y), dtype=x.dtype, device=x.device).unsqueeze(1)
    g = F.conv2d(x.reshape(n * c, 1, h, w), kernels, padding=1)
    return g[:, 0].reshape(n, c, h, w), g[:, 1].reshape(n, c, h, w)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB -> N x 1 x H x W luma (BT.601); other channel counts pass through."""
    if x.shape[1] != 3:
        return x
    weights = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def patch_variance_map(g: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Variance of each non-overlapping ``patch_size`` x ``patch_size`` patch.

    Args:
        g: N x C x H x W float tensor, H and W >= ``patch_size``. Rows/columns past
            the last whole patch are dropped (as ``torch.nn.Unfold`` with stride n does).

    Returns:
        N x C x (H // n) x (W // n) unbiased variances (divisor n*n - 1, as the GV
        paper's reference implementation).
    """
    n, c, h, w = g.shape
    p = patch_size
    if h < p or w < p:
        raise ValueError(f"gradient variance loss: image {h}x{w} is smaller than patch_size {p}; lower patch_size")
    g = g[:, :, : h // p * p, : w // p * p]
    patches = g.reshape(n, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)
    return patches.reshape(n, c, h // p, w // p, p * p).var(dim=-1, unbiased=True)


class GradientVarianceLoss(nn.Module):
    """Gradient Variance (GV) loss, Abrahamyan et al., ICASSP 2022.

    Following the paper: both images are turned into grayscale (RGB inputs; other
    channel counts are used per channel), Sobel derivative maps ``Gx`` and ``Gy``
    are computed, each is cut into non-overlapping n x n patches, the variance of
    every patch forms a variance map, and the loss is
    ``d(var(Gx(sr)), var(Gx(hr))) + d(var(Gy(sr)), var(Gy(hr)))``.

    Choices (documented): Sobel kernels rather than SPSR's central differences,
    because the paper defines the loss on Sobel maps; ``d`` is the mean squared
    error by default because the paper uses the L2 distance (``criterion="l1"``
    gives the L1 variant); unbiased patch variance as the paper's reference code.

    Input: ``sr``, ``hr`` N x C x H x W float, H and W >= ``patch_size``.
    Output: 0-dim tensor, 0 for identical inputs.
    """

    def __init__(self, *, patch_size: int = 8, criterion: str = "mse") -> None:
        super().__init__()
        if patch_size < 2:
            raise ValueError(f"patch_size must be >= 2 (a variance needs two values), got {patch_size}")
        self.patch_size = patch_size
        self.criterion = _criterion(criterion)

    def variance_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(variance map of Gx, variance map of Gy), each N x C' x H//n x W//n."""
        gx, gy = sobel_gradients(to_grayscale(x))
        return patch_variance_map(gx, self.patch_size), patch_variance_map(gy, self.patch_size)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair("GradientVarianceLoss", sr, hr)
        dist = _CRITERIA[self.criterion]
        vx_sr, vy_sr = self.variance_maps(sr)
        vx_hr, vy_hr = self.variance_maps(hr)
        return dist(vx_sr, vx_hr) + dist(vy_sr, vy_hr)


class SecondOrderGradientLoss(nn.Module):
    """L1 between second-order gradient maps ``G(G(sr))`` and ``G(G(hr))``.

    ``G`` is SPSR's gradient magnitude map (:func:`spsr_cli.model.gradient.gradient_map`)
    with zero padding ``padding`` (1 keeps the size).

    Input: ``sr``, ``hr`` N x C x H x W float. Output: 0-dim tensor.
    """

    def __init__(self, *, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair("SecondOrderGradientLoss", sr, hr)
        p = self.padding
        return F.l1_loss(gradient_map(gradient_map(sr, p), p), gradient_map(gradient_map(hr, p), p))


class GradientMapLoss(nn.Module):
    """SPSR's gradient loss: ``MSE(G'(sr), G'(hr))`` with padding-2 gradient maps ``G'``.

    Input: ``sr``, ``hr`` N x C x H x W float. Output: 0-dim tensor.
    """

    def __init__(self, *, padding: int = 2) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair("GradientMapLoss", sr, hr)
        return F.mse_loss(gradient_map(sr, self.padding), gradient_map(hr, self.padding))


class RelativisticAverageGANLoss(nn.Module):
    """Relativistic average GAN (ESRGAN, used by SPSR) with a BCE-with-logits criterion.

    With ``C`` the discriminator logits, ``D_ra(a, b) = sigmoid(C(a) - mean(C(b)))``:

    * discriminator: ``(BCE(real - mean(fake), 1) + BCE(fake - mean(real), 0)) / 2``
    * generator:     ``(BCE(real - mean(fake), 0) + BCE(fake - mean(real), 1)) / 2``

    Logits are N x 1 (any shape works; means run over the whole batch). For the
    discriminator step pass ``fake_logits`` from a detached SR image; for the
    generator step the real logits need no gradient (the caller may detach them).
    """

    def _term(self, logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def generator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real_rel = real_logits - fake_logits.mean()
        fake_rel = fake_logits - real_logits.mean()
        return (self._term(real_rel, 0.0) + self._term(fake_rel, 1.0)) / 2

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real_rel = real_logits - fake_logits.mean()
        fake_rel = fake_logits - real_logits.mean()
        return (self._term(real_rel, 1.0) + self._term(fake_rel, 0.0)) / 2

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`generator_loss`."""
        return self.generator_loss(real_logits, fake_logits)


class PerceptualLoss(nn.Module):
    """L1 (or MSE) between features of a frozen backbone.

    ``backbone`` maps N x 3 x H x W ImageNet-normalised RGB to a feature tensor
    (e.g. :class:`spsr_cli.model.vgg.VGGFeatures`). Its parameters are frozen
    (``requires_grad=False``) and it stays in eval mode even when this loss is put
    in train mode. Gradients still flow to ``sr``.

    Input: ``sr``, ``hr`` N x 3 x H x W RGB float in [0, 1]. Output: 0-dim tensor.
    """

    def __init__(self, *, backbone: nn.Module, criterion: str = "l1") -> None:
        super().__init__()
        self.backbone = backbone
        self.criterion = _criterion(criterion)
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        self.backbone.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.backbone.eval()
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(dtype=x.dtype)
        std = self.std.to(dtype=x.dtype)
        return self.backbone((x - mean) / std)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair("PerceptualLoss", sr, hr)
        if sr.shape[1] != 3:
            raise ValueError(f"PerceptualLoss expects RGB inputs (3 channels), got {sr.shape[1]}")
        with torch.no_grad():
            target = self._features(hr)
        return _CRITERIA[self.criterion](self._features(sr), target)
