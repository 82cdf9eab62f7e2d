"""VGG-style patch discriminator of ESRGAN/SPSR (the "VGG 128" topology).

Ten convolutions in five stages: each stage has a 3x3 stride-1 conv then a 4x4
stride-2 conv (which halves the size); channels base, 2*base, 4*base, 8*base,
8*base. Every conv but the first is followed by batch norm; every conv by
LeakyReLU(0.2). A two-layer head (flattened features -> 100 -> 1) gives one logit
per image. Written from the ESRGAN/SPSR papers' descriptions.
"""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.2
HIDDEN = 100


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def feature_size(input_size: int) -> int:
    """Spatial size of the last feature map for an ``input_size`` square input (128 -> 4)."""
    size = input_size
    for _ in range(5):
        size = _conv_out(size, 4, 2, 1)
    return size


class VGGDiscriminator(nn.Module):
    """Relativistic-GAN discriminator on fixed-size square patches.

    Args:
        in_channels: input channels (3 for images or 3-channel gradient maps).
        base_channels: channels of the first stage (64 in the papers).
        input_size: patch side the head is built for (128 in the papers: the last
            feature map is 4x4, so the first linear layer takes 8*64*4*4 = 8192 values).
            For SPSR's gradient discriminator on padding-2 gradient maps of 128
            patches use 130 (also a 4x4 last feature map).

    Input: N x in_channels x input_size x input_size float tensor.
    Output: N x 1 logits (no sigmoid).
    """

    def __init__(self, *, in_channels: int = 3, base_channels: int = 64, input_size: int = 128) -> None:
        super().__init__()
        last = feature_size(input_size)
        if last < 1:
            raise ValueError(f"input_size {input_size} is too small for five stride-2 stages; use at least 32")
        self.in_channels = in_channels
        self.input_size = input_size
        widths = [base_channels, base_channels * 2, base_channels * 4, base_channels * 8, base_channels * 8]
        layers: list[nn.Module] = []
        previous = in_channels
        for stage, width in enumerate(widths):
            first_bn = stage > 0
            layers += [nn.Conv2d(previous, width, 3, 1, 1, bias=not first_bn)]
            if first_bn:
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.LeakyReLU(NEGATIVE_SLOPE), nn.Conv2d(width, width, 4, 2, 1, bias=False)]
            layers += [nn.BatchNorm2d(width), nn.LeakyReLU(NEGATIVE_SLOPE)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(previous * last * last, HIDDEN),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(HIDDEN, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"VGGDiscriminator expects N x {self.in_channels} x {self.input_size} x {self.input_size} patches, "
                f"got {tuple(x.shape)}; crop or resize patches to {self.input_size}x{self.input_size} "
                "or build the discriminator with a matching input_size"
            )
        return self.classifier(torch.flatten(self.features(x), 1))
