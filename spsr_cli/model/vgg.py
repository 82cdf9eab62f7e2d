"""VGG16/19 convolutional trunks (torchvision's layer order), as the perceptual loss uses them.

A plain ``nn.Module`` without weights: :mod:`spsr_cli.weights.vgg` fetches and loads them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

#: Convolution widths per stage (torchvision's configurations "D" and "E").
STAGES = {
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
DEFAULT_LAST = {16: "conv5_3", 19: "conv5_4"}
_LAYER_NAME = re.compile(r"(conv|relu)([1-5])_([1-4])")


def _vgg_layers(stages: tuple[tuple[int, ...], ...], last: tuple[int, int], *, with_relu: bool) -> list[nn.Module]:
    """conv/ReLU/max-pool list in torchvision's order, ending at conv ``last`` (plus its ReLU if asked)."""
    layers: list[nn.Module] = []
    channels = 3
    for s, widths in enumerate(stages, start=1):
        if s > 1:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        for i, width in enumerate(widths, start=1):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            channels = width
            if (s, i) == last and not with_relu:
                return layers
            layers.append(nn.ReLU(inplace=False))
            if (s, i) == last:
                return layers
    raise ValueError(f"no VGG layer at stage/index {last}")


class VGGFeatures(nn.Module):
    """VGG16/19 convolutional trunk cut after ``last_layer`` (e.g. ``conv5_4``: before its ReLU).

    The layers live in ``features`` with torchvision's indices (conv, ReLU, ...,
    max-pool), so torchvision ``features.N.*`` weights load directly.

    Input: N x 3 x H x W float, ImageNet-normalised RGB. Output: N x C x H/16 x W/16
    features (C = 512 for the conv5 layers).
    """

    def __init__(self, *, depth: int = 19, last_layer: str | None = None) -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"VGG depth must be 16 or 19, got {depth}")
        last = last_layer or DEFAULT_LAST[depth]
        match = _LAYER_NAME.fullmatch(last)
        if match is None or int(match[3]) > len(STAGES[depth][int(match[2]) - 1]):
            raise ValueError(f"VGG{depth} has no layer {last!r}; use e.g. {DEFAULT_LAST[depth]!r} or 'relu4_2'")
        kind, stage, index = match[1], int(match[2]), int(match[3])
        self.depth = depth
        self.last_layer = last
        self.features = nn.Sequential(*_vgg_layers(STAGES[depth], (stage, index), with_relu=kind == "relu"))

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
