"""LPIPS (Zhang et al., CVPR 2018), AlexNet variant with the v0.1 linear layers.

A plain ``nn.Module``: no downloads or device choice here (see
:mod:`spsr_cli.weights.lpips_weights` for the weights).

State-dict layout (the same names as torchvision's ``alexnet().features``):
``features.{0,3,6,8,10}.{weight,bias}`` and ``lins.{0..4}.weight`` (1 x C x 1 x 1, no bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: channels of the five AlexNet ReLU outputs LPIPS compares
LPIPS_CHANNELS = (64, 192, 384, 256, 256)
#: indices in ``features`` whose outputs are compared (after each ReLU)
_TAPS = (1, 4, 7, 9, 11)


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` up to the last ReLU (no final max-pool)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
    )


#: Smallest image side LPIPS' AlexNet can take (its second pooling needs a 1 x 1 input).
MIN_SIZE = 32


class LPIPS(nn.Module):
    """Learned perceptual distance; lower is more similar.

    ``forward(x, y)``: two N x 3 x H x W float tensors in [-1, 1] (RGB), H, W >= 32
    -> N distances (float, >= 0). Weights start random; load them with
    ``load_state_dict`` (keys listed in the module docstring).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_CHANNELS)
        # input normalisation of the LPIPS "ScalingLayer" (constants, not weights)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        outs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two N x 3 x H x W tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for fx, fy, lin in zip(self._activations(x), self._activations(y), self.lins):
            diff = (_unit(fx) - _unit(fy)) ** 2
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total


def _unit(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise each spatial position's feature vector to unit length."""
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def load_lpips(**kwargs: Any) -> LPIPS:
    """An :class:`LPIPS` in eval mode on the CPU with the registry's weights.

    Keyword arguments go to :func:`spsr_cli.weights.lpips_weights.lpips_state_dict`
    (``offline``, ``trust_unverified``, ``find_links``); raises
    :class:`~spsr_cli.errors.WeightsNotAvailableError` when no source can be used.
    """
    from spsr_cli.weights.lpips_weights import lpips_state_dict

    model = LPIPS()
    model.load_state_dict(lpips_state_dict(**kwargs), strict=True)
    return model.eval().requires_grad_(False)


def image_to_lpips_input(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x H x W float32 in [-1, 1]."""
    t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return t / 127.5 - 1.0


__all__ = ["LPIPS", "LPIPS_CHANNELS", "alexnet_features", "image_to_lpips_input", "load_lpips"]
