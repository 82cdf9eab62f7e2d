"""Structure losses of SPSR-P / SPSR-J: the frozen feature extractor, the pixelwise
structure loss and the discriminator on NSE feature maps.

``loss.nse`` names the NSE: a file or a registered name (see :mod:`spsr_cli.weights.nse_files`).

The structure features are the NSE's channel vectors normalised to unit length (the NSE
is trained with cosine similarity, so only their direction carries meaning):
``f(x) = NSE(x) / max(||NSE(x)||_2, 1e-6)`` per position, N x C x H/4 x W/4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spsr_cli.model.nse import STRIDE, NSENet
from spsr_cli.weights.nse_files import load_nse

NORM_EPS = 1e-6
NEGATIVE_SLOPE = 0.2
HIDDEN = 100


# ---- losses ---------------------------------------------------------------------------


def normalise_features(features: torch.Tensor) -> torch.Tensor:
    """Unit-length channel vectors: N x C x h x w -> same shape, ``v / max(||v||, 1e-6)``."""
    return F.normalize(features, dim=1, eps=NORM_EPS)


class StructureFeatures(nn.Module):
    """A frozen NSE that maps images to normalised structure features.

    Input: N x 3 x H x W float RGB in [0, 1] (H, W multiples of 4).
    Output: N x C x H/4 x W/4 unit channel vectors (same dtype as the NSE's output).
    The NSE stays in eval mode and its parameters never train; gradients flow to the input.
    """

    def __init__(self, nse: NSENet, *, name: str = "") -> None:
        super().__init__()
        self.nse = nse.requires_grad_(False).eval()
        self.name = name

    @property
    def channels(self) -> int:
        return self.nse.config.channels

    def train(self, mode: bool = True) -> StructureFeatures:
        super().train(mode)
        self.nse.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise_features(self.nse(x))


def structure_pixel_loss(f_sr: torch.Tensor, f_hr: torch.Tensor) -> torch.Tensor:
    """Pixelwise structure loss: mean absolute difference of the structure features
    (N x C x h x w each; ``f_hr`` is treated as a constant)."""
    return F.l1_loss(f_sr, f_hr.detach())


def _conv_out(size: int) -> int:
    return (size + 2 - 4) // 2 + 1


class FeatureDiscriminator(nn.Module):
    """Relativistic-GAN discriminator on NSE feature maps, VGG-style like the image and
    gradient discriminators, adapted to the feature scale and channel count.

    A map of side S (= crop / 4) goes through as many stages as halve it down to 4 x 4
    (S = 32 for 128-px crops: 3 stages, the image discriminator's last feature size).
    Each stage: 3x3 conv, 4x4 stride-2 conv, each followed by batch norm (not the very
    first conv) and LeakyReLU(0.2); widths base, 2*base, 4*base (capped at 8*base).
    Head: flattened features -> 100 -> 1 logit.

    Input: N x in_channels x S x S float, S >= 8. Output: N x 1 logits.
    """

    def __init__(self, *, in_channels: int, base_channels: int = 64, input_size: int = 32) -> None:
        super().__init__()
        if input_size < 8:
            raise ValueError(
                f"FeatureDiscriminator needs feature maps of at least 8 x 8 (crops of {8 * STRIDE} px), "
                f"got {input_size}; raise data.crop_size"
            )
        self.in_channels, self.input_size = in_channels, input_size
        layers: list[nn.Module] = []
        size, previous, stage = input_size, in_channels, 0
        while size >= 8:
            width = base_channels * min(2**stage, 8)
            layers.append(nn.Conv2d(previous, width, 3, 1, 1, bias=stage == 0))
            if stage > 0:
                layers.append(nn.BatchNorm2d(width))
            layers += [
                nn.LeakyReLU(NEGATIVE_SLOPE),
                nn.Conv2d(width, width, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(NEGATIVE_SLOPE),
            ]
            size, previous, stage = _conv_out(size), width, stage + 1
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(previous * size * size, HIDDEN), nn.LeakyReLU(NEGATIVE_SLOPE), nn.Linear(HIDDEN, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"FeatureDiscriminator expects N x {self.in_channels} x {self.input_size} x {self.input_size} "
                f"feature maps, got {tuple(x.shape)}"
            )
        return self.classifier(torch.flatten(self.features(x), 1))


def build_structure_features(spec: str) -> StructureFeatures:
    """The frozen structure extractor that ``loss.nse`` (already resolved to a name or path) names."""
    nse, _ = load_nse(spec)
    return StructureFeatures(nse, name=spec)
