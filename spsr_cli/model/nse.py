"""Neural structure extractor (NSE) of SPSR-P / SPSR-J and its self-supervised training heads.

Written from the description in Ma et al., "Structure-Preserving Image Super-Resolution"
(TPAMI 2021): a small, shallow network of six 3x3 convolutions, each followed by ReLU,
ResNet-style with two skip connections, whose output is downsampled 4x against the
input, so neighbouring feature vectors are 4 pixels apart and each describes the local
structure inside its small receptive field (31 x 31 pixels here)::

    h1 = relu(conv1(x - 0.5))                 stride 2   (in -> C)
    h2 = h1 + relu(conv3(relu(conv2(h1))))    skip 1
    h3 = relu(conv4(h2))                      stride 2
    y  = h3 + relu(conv6(relu(conv5(h3))))    skip 2

Every conv is 3x3, zero padding 1, with bias. Feature position ``(i, j)`` sees the input
pixels ``[4i - 15, 4i + 15] x [4j - 15, 4j + 15]``.

The heads are the training tasks: :class:`ContrastiveHead` (NSE-P, an autoregressive
MLP predicting a feature from its neighbours) and :class:`JigsawHead` (NSE-J, a 3-layer
classifier of the permutation of four feature vectors). Only :class:`NSENet` is shipped
and used by the structure losses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

#: Downsampling factor of the NSE: adjacent feature vectors are this many pixels apart.
STRIDE = 4
#: Side of the square receptive field of one feature vector, in input pixels.
RECEPTIVE_FIELD = 31

#: Neighbour offsets (dy, dx) in feature positions of the contrastive-prediction variants.
CONTEXT_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "horizontal": ((0, -1), (0, 1)),
    "vertical": ((-1, 0), (1, 0)),
    "cross": ((0, -1), (0, 1), (-1, 0), (1, 0)),
}
#: Number of jigsaw classes: permutations of a 2x2 grid.
JIGSAW_CLASSES = 24


def non_overlap_distance() -> int:
    """Smallest Chebyshev distance (in feature positions) at which two feature vectors'
    receptive fields share no input pixel: ``ceil(31 / 4)`` = 8."""
    return math.ceil(RECEPTIVE_FIELD / STRIDE)


@dataclass(frozen=True)
class NSEConfig:
    """Size of an NSE; stored with its weights (safetensors metadata ``config``)."""

    in_channels: int = 3
    channels: int = 64

    def __post_init__(self) -> None:
        if self.in_channels <= 0 or self.channels <= 0:
            raise ValueError(f"NSEConfig needs positive in_channels and channels, got {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NSEConfig:
        unknown = sorted(set(data) - {"in_channels", "channels"})
        if unknown:
            raise ValueError(f"unknown NSEConfig field(s) {unknown}; known: in_channels, channels")
        return cls(**{k: int(v) for k, v in data.items()})


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1)


class NSENet(nn.Module):
    """The neural structure extractor (see the module docstring).

    Input: N x in_channels x H x W float, RGB in [0, 1], H and W multiples of 4.
    Output: N x channels x H/4 x W/4 float (non-negative: every conv ends in ReLU).
    """

    def __init__(self, config: NSEConfig = NSEConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.conv1 = _conv(config.in_channels, c, 2)
        self.conv2 = _conv(c, c)
        self.conv3 = _conv(c, c)
        self.conv4 = _conv(c, c, 2)
        self.conv5 = _conv(c, c)
        self.conv6 = _conv(c, c)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ValueError(
                f"NSENet expects N x {self.config.in_channels} x H x W with H, W multiples of {STRIDE}, "
                f"got {tuple(x.shape)}; crop the input to a multiple of {STRIDE}"
            )
        act = self.act
        h = act(self.conv1(x - 0.5))
        h = h + act(self.conv3(act(self.conv2(h))))
        h = act(self.conv4(h))
        return h + act(self.conv6(act(self.conv5(h))))


class ContrastiveHead(nn.Module):
    """Autoregressive predictors of NSE-P: one MLP per context variant.

    ``forward(context, variant)``: context N x k*C (the k neighbour vectors of
    :data:`CONTEXT_OFFSETS[variant]`, concatenated in that order) -> N x C prediction.
    """

    def __init__(self, channels: int, hidden: int, variants: tuple[str, ...]) -> None:
        super().__init__()
        unknown = [v for v in variants if v not in CONTEXT_OFFSETS]
        if unknown or not variants:
            raise ValueError(f"unknown contrastive variant(s) {unknown or variants}; use {sorted(CONTEXT_OFFSETS)}")
        self.predictors = nn.ModuleDict(
            {
                v: nn.Sequential(
                    nn.Linear(len(CONTEXT_OFFSETS[v]) * channels, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, channels),
                )
                for v in variants
            }
        )

    def forward(self, context: torch.Tensor, variant: str) -> torch.Tensor:
        return self.predictors[variant](context)


class JigsawHead(nn.Module):
    """3-layer fully connected classifier of NSE-J.

    Input: N x 4*C (four feature vectors concatenated in a permuted order).
    Output: N x 24 logits over :data:`spsr_cli.train.nse_tasks.PERMUTATIONS`.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(4 * channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, JIGSAW_CLASSES),
        )

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.classifier(tiles)
