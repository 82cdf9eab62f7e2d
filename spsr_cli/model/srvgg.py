"""SRVGGNetCompact: Real-ESRGAN's compact network (``realesr-general-x4v3``, ``realesr-animevideov3``).

A plain stack of 3x3 convolutions at input resolution, each followed by an activation
(PReLU in every published model), then one convolution to ``out_channels * scale**2``
channels, a pixel shuffle, and the nearest-upsampled input added back: the network only
learns the residual over nearest-neighbour upscaling. Parameter names follow Real-ESRGAN:
``body.0`` (first conv), ``body.1`` (its activation), ``body.{2k}`` / ``body.{2k+1}``
(body conv k and its activation, k = 1..num_conv), ``body.{2 num_conv + 2}`` (last conv).
Written from the Real-ESRGAN paper and its model description.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: Activations the published compact models use (``prelu``: one learned slope per channel).
ACTIVATIONS = ("prelu", "relu", "leakyrelu")
LEAKY_SLOPE = 0.1


@dataclass(frozen=True)
class SRVGGConfig:
    """Architecture hyper-parameters; stored with every weights file.

    Attributes:
        in_channels / out_channels: image channels (3 for RGB).
        nf: feature channels. num_conv: 3x3 convolutions between the first and the last.
        scale: output size / input size (1 to 8).
        activation: ``prelu`` (learned per-channel slope), ``relu`` or ``leakyrelu`` (slope 0.1).
    """

    architecture: ClassVar[str] = "srvgg"
    #: The fields a state dict's tensor shapes fix (a stored config is checked against them before any build;
    #: the activation is not: ReLU and LeakyReLU carry no tensor, and a wrong one fails the strict load).
    shape_fields: ClassVar[tuple[str, ...]] = ("in_channels", "out_channels", "nf", "num_conv", "scale")

    in_channels: int = 3
    out_channels: int = 3
    nf: int = 64
    num_conv: int = 32
    scale: int = 4
    activation: str = "prelu"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "activation":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if f.name == "num_conv" else 1):
                raise ValueError(f"SRVGGConfig.{f.name} must be a positive integer, got {value!r}")
        if not 1 <= self.scale <= 8:
            raise ValueError(f"SRVGGConfig.scale must be 1 to 8, got {self.scale}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SRVGGConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def receptive_radius(self) -> int:
        """Input pixels of context that can reach an output pixel, per side (exact).

        ``num_conv + 2`` 3x3 convolutions at input resolution reach one pixel each; the pixel
        shuffle and the nearest-upsampled input stay inside the output pixel's own input pixel.
        """
        return self.num_conv + 2

    @property
    def tile_context(self) -> int:
        """Default tile overlap: the whole receptive radius (34 pixels for realesr-general-x4v3), so
        tiles give exactly the whole-image result; 16 would give 74.8 dB on a Set14 photo."""
        return self.receptive_radius

    @property
    def tile_align(self) -> int:
        """Tiles may start anywhere (convolutions only)."""
        return 1

    @property
    def work_channels(self) -> int:
        """Activation elements per output pixel at the peak of one forward pass (memory planning).

        At input resolution a convolution's output and its activation (``nf`` each) are alive
        together, a ``scale**2`` times smaller grid than the output; at output resolution the
        last convolution's channels, their shuffled copy, the upsampled input, the sum and the
        engine's clamped copy (``out_channels`` each). Peaks measured by counting tensor bytes
        (tests/test_engine_tiling.py; nf 16, x4 and x2, 32- and 48-pixel patches) are 1.1 to 1.45
        times below this bound.
        """
        return math.ceil((2 * self.nf + self.in_channels) / self.scale**2) + 5 * self.out_channels

    @property
    def macs_per_input_pixel(self) -> float:
        """Multiply-accumulates of one forward pass per input pixel (every convolution)."""
        nf = self.nf
        last = nf * self.out_channels * self.scale**2
        return 9.0 * (self.in_channels * nf + self.num_conv * nf * nf + last)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SRVGGConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SRVGGConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**{k: (str(v) if k == "activation" else int(v)) for k, v in data.items()})


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(LEAKY_SLOPE)


class SRVGGNetCompact(nn.Module):
    """SRVGGNetCompact generator.

    Input: N x in_channels x H x W float tensor, RGB in [0, 1] (float32, float16 or bfloat16).
    Output: N x out_channels x (scale*H) x (scale*W) tensor of the same dtype, nominally
    [0, 1], NOT clamped. Any H and W.
    """

    def __init__(self, *, config: SRVGGConfig | None = None) -> None:
        super().__init__()
        self.config = config or SRVGGConfig()
        cfg = self.config
        if cfg.in_channels != cfg.out_channels:
            raise ValueError(
                f"SRVGGNetCompact adds the upsampled input to its output, so in_channels ({cfg.in_channels}) "
                f"must equal out_channels ({cfg.out_channels})"
            )
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.nf, 3, 1, 1), _activation(cfg.activation, cfg.nf)]
        for _ in range(cfg.num_conv):
            layers += [nn.Conv2d(cfg.nf, cfg.nf, 3, 1, 1), _activation(cfg.activation, cfg.nf)]
        layers.append(nn.Conv2d(cfg.nf, cfg.out_channels * cfg.scale**2, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.scale
        out = self.body(x)
        if s == 1:
            return out + x
        return F.pixel_shuffle(out, s) + F.interpolate(x, scale_factor=s, mode="nearest")
