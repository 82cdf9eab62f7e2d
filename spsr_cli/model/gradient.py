"""The SPSR gradient map: per-channel central differences, then their magnitude.

Shared by the generator (its gradient branch works on ``G(x)``) and the training
losses (which compare gradient maps of SR and HR images), so both always agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Vertical kernel (cross-correlation): bottom minus top neighbour.
KERNEL_V = ((0.0, -1.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
#: Horizontal kernel (cross-correlation): right minus left neighbour.
KERNEL_H = ((0.0, 0.0, 0.0), (-1.0, 0.0, 1.0), (0.0, 0.0, 0.0))
EPS = 1e-6


def gradient_map(x: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Gradient magnitude of every channel independently.

    Args:
        x: N x C x H x W float tensor (any range, any float dtype).
        padding: zero padding on each side. 1 (the generator's ``G``) keeps the
            size; 2 (the loss's ``G'``) makes the output 2 pixels larger per side.

    Returns:
        N x C x (H + 2p - 2) x (W + 2p - 2) tensor, same dtype and device as ``x``,
        ``sqrt(v^2 + h^2 + 1e-6)``.
    """
    if x.dim() != 4:
        raise ValueError(f"gradient_map expects an N x C x H x W tensor, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    kernels = torch.tensor((KERNEL_V, KERNEL_H), dtype=x.dtype, device=x.device).unsqueeze(1)
    flat = x.reshape(n * c, 1, h, w)
    vh = F.conv2d(flat, kernels, padding=padding)
    mag = torch.sqrt(vh[:, 0] ** 2 + vh[:, 1] ** 2 + EPS)
    return mag.reshape(n, c, mag.shape[-2], mag.shape[-1])


class GradientMap(nn.Module):
    """``nn.Module`` wrapper of :func:`gradient_map` (no parameters, nothing in the state dict)."""

    def __init__(self, *, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_map(x, self.padding)
