"""The SPSR generator (Ma et al., "Structure-Preserving Super Resolution with Gradient Guidance").

Two branches share the low-resolution trunk: the SR branch (an ESRGAN-style RRDB
network) and the gradient branch, which predicts the high-resolution gradient map
from the low-resolution one, taking trunk features at four tap points. A fusion
block merges both at output resolution. Written from the paper and the layer
description in the project's architecture notes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping, NamedTuple

import torch
from torch import nn

from spsr_cli.model.blocks import RRDB, Upsample, act, conv3x3, rrdb_macs
from spsr_cli.model.gradient import GradientMap


@dataclass(frozen=True)
class SPSRConfig:
    """Architecture hyper-parameters; stored with every weights file.

    Attributes:
        in_channels / out_channels: image channels (3 for RGB).
        nf: feature channels. nb: RRDB blocks in the trunk. gc: growth channels.
        scale: upscaling factor, a power of two (2, 4 or 8).
    """

    architecture: ClassVar[str] = "spsr"
    #: The fields a state dict's tensor shapes fix (a stored config is checked against them before any build).
    shape_fields: ClassVar[tuple[str, ...]] = ("in_channels", "out_channels", "nf", "nb", "gc", "scale")

    in_channels: int = 3
    out_channels: int = 3
    nf: int = 64
    nb: int = 23
    gc: int = 32
    scale: int = 4

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "nf", "nb", "gc", "scale"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SPSRConfig.{name} must be a positive integer, got {value!r}")
        if self.scale not in (2, 4, 8):
            raise ValueError(f"SPSRConfig.scale must be 2, 4 or 8, got {self.scale}")

    @property
    def num_upsamples(self) -> int:
        return int(math.log2(self.scale))

    @property
    def taps(self) -> tuple[int, int, int, int]:
        """1-based trunk block indices whose outputs feed the gradient branch.

        For nb = 23 these are 5, 10, 15, 20 (the published model); other depths
        spread four taps the same way, ``round(k * nb / 4.6)`` clamped to [1, nb].
        """
        return tuple(min(self.nb, max(1, int(k * self.nb / 4.6 + 0.5))) for k in range(1, 5))  # type: ignore[return-value]

    @property
    def receptive_radius(self) -> int:
        """Input pixels of context that can reach an output pixel, per side (an upper bound).

        An output pixel depends only on input pixels within this distance (Chebyshev), so
        tiling with at least this much context gives the whole-image result. Counted from the
        3x3 convolutions on the longest path: 15 per RRDB; the SR trunk, or the gradient
        branch fed by the trunk taps; then the convolutions at higher resolutions (a fraction
        of an input pixel each), plus one pixel for nearest-neighbour upsampling alignment.
        """
        rrdb = 15
        trunk = 1 + rrdb * self.nb + 1  # conv_first, RRDBs, trunk_conv
        branch = 2  # gradient map, branch conv_first
        for tap in self.taps:
            branch = max(branch, 1 + rrdb * tap) + rrdb + 1  # block on [branch, trunk tap], concat
        branch += 1  # lr_conv
        upsampling = sum(0.5**j for j in range(1, self.num_upsamples + 1))  # one conv per x2 step
        high_res = (2 + rrdb + 3) / self.scale  # hr_conv0/1, fusion RRDB, concat, hr_conv0, out
        return math.ceil(max(trunk, branch) + upsampling + high_res) + 1

    @property
    def tile_context(self) -> int:
        """Default tile overlap: 16 input pixels, the engine's default from before models had their own
        (the receptive radius is far larger; what lies beyond 16 pixels changes little)."""
        return 16

    @property
    def tile_align(self) -> int:
        """Tiles may start anywhere (convolutions only)."""
        return 1

    @property
    def work_channels(self) -> int:
        """Activation elements per output pixel at the peak of one forward pass (memory planning).

        At output resolution the fusion RRDB works on 2*nf channels plus four dense-growth
        layers (gc each) while the SR trunk, SR branch and gradient branch features (nf each)
        are still alive. Measured with torch's CPU allocator profile (full and tiny models,
        float32 and bfloat16, contiguous and channels_last): 15.6 to 20.5 x nf elements per
        output pixel with gc = nf / 2. The bound used is 16 nf + 10 gc.
        """
        return 16 * self.nf + 10 * self.gc

    @property
    def macs_per_input_pixel(self) -> int:
        """Multiply-accumulates of one forward pass per input pixel (every learned convolution)."""
        nf, gc, s2, out = self.nf, self.gc, self.scale**2, self.out_channels
        ups = sum(9 * nf * nf * 4**k for k in range(1, self.num_upsamples + 1))
        trunk = 9 * self.in_channels * nf + self.nb * rrdb_macs(nf, gc) + 9 * nf * nf + ups + 2 * 9 * nf * nf * s2
        branch = (
            9 * self.in_channels * nf
            + 4 * (rrdb_macs(2 * nf, gc) + 9 * 2 * nf * nf)
            + 9 * nf * nf
            + ups
            + 2 * 9 * nf * nf * s2
            + nf * out * s2
        )
        fusion = (rrdb_macs(2 * nf, gc) + 9 * 2 * nf * nf + 9 * nf * nf + 9 * nf * out) * s2
        return trunk + branch + fusion

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SPSRConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SPSRConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**{k: int(v) for k, v in data.items()})


#: The generator's parameter groups, by what they do.
PARTS = ("trunk", "branch", "fusion")


def part_of(parameter_name: str) -> str:
    """Which of :data:`PARTS` a parameter (``SPSRNet.named_parameters()`` name) belongs to."""
    head = parameter_name.split(".", 1)[0]
    if head in ("branch", "fusion"):
        return head
    return "trunk"


class SPSROutput(NamedTuple):
    """Generator outputs.

    sr: N x 3 x sH x sW super-resolved image, nominally [0, 1], NOT clamped (None when the
        forward ran with ``fuse=False``).
    branch: N x 3 x sH x sW predicted high-resolution gradient map.
    grad_lr: N x 3 x H x W gradient map of the input.
    """

    sr: torch.Tensor | None
    branch: torch.Tensor
    grad_lr: torch.Tensor


class GradientBranch(nn.Module):
    """Predicts the HR gradient map from the LR gradient map and four trunk features."""

    def __init__(self, *, config: SPSRConfig) -> None:
        super().__init__()
        nf, gc = config.nf, config.gc
        self.conv_first = conv3x3(config.in_channels, nf)
        self.blocks = nn.ModuleList(RRDB(channels=2 * nf, growth=gc) for _ in range(4))
        self.concats = nn.ModuleList(conv3x3(2 * nf, nf) for _ in range(4))
        self.lr_conv = conv3x3(nf, nf)
        self.upsampler = nn.ModuleList(Upsample(channels=nf) for _ in range(config.num_upsamples))
        self.hr_conv0 = conv3x3(nf, nf)
        self.hr_conv1 = conv3x3(nf, nf)
        self.out = nn.Conv2d(nf, config.out_channels, kernel_size=1)

    def forward(self, grad_lr: torch.Tensor, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (features N x nf x sH x sW, predicted gradient map N x 3 x sH x sW)."""
        b0 = self.conv_first(grad_lr)
        c = b0
        for block, concat, feature in zip(self.blocks, self.concats, taps):
            c = concat(block(torch.cat((c, feature), 1)))
        c = b0 + self.lr_conv(c)
        for up in self.upsampler:
            c = up(c)
        c = self.hr_conv1(act(self.hr_conv0(c)))
        return c, self.out(c)


class Fusion(nn.Module):
    """Merges gradient-branch and SR-branch features at output resolution (the paper's ``f_`` layers)."""

    def __init__(self, *, config: SPSRConfig) -> None:
        super().__init__()
        nf = config.nf
        self.block = RRDB(channels=2 * nf, growth=config.gc)
        self.concat = conv3x3(2 * nf, nf)
        self.hr_conv0 = conv3x3(nf, nf)
        self.out = conv3x3(nf, config.out_channels)

    def forward(self, grad_features: torch.Tensor, sr_features: torch.Tensor) -> torch.Tensor:
        z = self.concat(self.block(torch.cat((grad_features, sr_features), 1)))
        return self.out(act(self.hr_conv0(z)))


class SPSRNet(nn.Module):
    """SPSR generator.

    Input: N x in_channels x H x W float tensor, RGB in [0, 1] (float32, float16 or bfloat16).
    Output: :class:`SPSROutput` with ``sr`` of shape N x out_channels x (scale*H) x (scale*W).

    Parameters fall into three parts (:data:`PARTS`, :func:`part_of`): ``trunk`` (the SR
    branch: the RRDB trunk and its upsampler), ``branch`` (the gradient branch) and
    ``fusion``; training may freeze any of them.
    """

    def __init__(self, *, config: SPSRConfig | None = None) -> None:
        super().__init__()
        self.config = config or SPSRConfig()
        cfg = self.config
        nf = cfg.nf
        self.gradient = GradientMap(padding=1)
        self.conv_first = conv3x3(cfg.in_channels, nf)
        self.trunk = nn.ModuleList(RRDB(channels=nf, growth=cfg.gc) for _ in range(cfg.nb))
        self.trunk_conv = conv3x3(nf, nf)
        self.upsampler = nn.ModuleList(Upsample(channels=nf) for _ in range(cfg.num_upsamples))
        self.hr_conv0 = conv3x3(nf, nf)
        self.hr_conv1 = conv3x3(nf, nf)
        self.branch = GradientBranch(config=cfg)
        self.fusion = Fusion(config=cfg)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor, *, fuse: bool = True) -> SPSROutput:
        """``fuse=False`` skips the fusion block and the SR branch's upsampling (``sr`` is None):
        the cheap path when only the gradient branch's prediction is wanted."""
        grad_lr = self.gradient(x)
        f0 = self.conv_first(x)
        taps = self.config.taps
        kept: dict[int, torch.Tensor] = {}
        t = f0
        for index, block in enumerate(self.trunk, start=1):
            t = block(t)
            if index in taps:
                kept[index] = t
        features = [kept[index] for index in taps]
        grad_features, branch = self.branch(grad_lr, features)
        if not fuse:
            return SPSROutput(sr=None, branch=branch, grad_lr=grad_lr)
        t = f0 + self.trunk_conv(t)
        for up in self.upsampler:
            t = up(t)
        s = self.hr_conv1(act(self.hr_conv0(t)))
        sr = self.fusion(grad_features, s)
        return SPSROutput(sr=sr, branch=branch, grad_lr=grad_lr)
