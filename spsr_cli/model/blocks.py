"""Building blocks shared by the generators (SPSR, RRDBNet): dense residual blocks and upsampling.

All convolutions are 3x3, stride 1, zero padding 1, with bias; the activation is
LeakyReLU(0.2). Every block maps N x C x H x W float tensors to the same dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=True)


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def rdb_macs(channels: int, growth: int) -> int:
    """Multiply-accumulates per pixel of one :class:`ResidualDenseBlock`."""
    return 9 * sum((channels + j * growth) * (growth if j < 4 else channels) for j in range(5))


def rrdb_macs(channels: int, growth: int) -> int:
    """Multiply-accumulates per pixel of one :class:`RRDB` (three dense blocks)."""
    return 3 * rdb_macs(channels, growth)


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; ``x + 0.2 * conv5([x, x1, .., x4])``.

    Shape: N x channels x H x W -> N x channels x H x W.
    """

    def __init__(self, *, channels: int, growth: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, growth)
        self.conv2 = conv3x3(channels + growth, growth)
        self.conv3 = conv3x3(channels + 2 * growth, growth)
        self.conv4 = conv3x3(channels + 3 * growth, growth)
        self.conv5 = conv3x3(channels + 4 * growth, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = act(self.conv1(x))
        x2 = act(self.conv2(torch.cat((x, x1), 1)))
        x3 = act(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = act(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + RESIDUAL_SCALE * x5


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs and a scaled skip.

    Shape: N x channels x H x W -> N x channels x H x W.
    """

    def __init__(self, *, channels: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(channels=channels, growth=growth)
        self.rdb2 = ResidualDenseBlock(channels=channels, growth=growth)
        self.rdb3 = ResidualDenseBlock(channels=channels, growth=growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.rdb3(self.rdb2(self.rdb1(x)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv and LeakyReLU. N x C x H x W -> N x C x 2H x 2W."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return act(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")))
