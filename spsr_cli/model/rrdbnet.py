"""ESRGAN's RRDBNet (ESRGAN, Real-ESRGAN, RealSR, BasicSR), with BasicSR key names.

A model of its own (``spsr upscale --model realesrgan-x4plus``), the network SPSR's SR branch
grows from (:mod:`spsr_cli.train.pretrained`), and the way to score an init source on its own.
Parameter names follow BasicSR: ``conv_first``, ``body.{i}.rdb{k}.conv{j}``, ``conv_body``,
``conv_up{u}``, ``conv_hr``, ``conv_last``.

Real-ESRGAN's x2 and x1 models first fold each 2x2 (x2) or 4x4 (x1) block of input pixels
into channels (pixel-unshuffle), then run the same x4 network; :attr:`RRDBNetConfig.unshuffle`
says which. Written from the ESRGAN and Real-ESRGAN papers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from spsr_cli.model.blocks import RRDB, act, conv3x3, rrdb_macs


@dataclass(frozen=True)
class RRDBNetConfig:
    """Architecture hyper-parameters; stored with every weights file.

    Attributes:
        in_channels / out_channels: image channels (3 for RGB).
        nf: feature channels. nb: RRDB blocks in the body. gc: growth channels.
        scale: output size / input size: 1, 2, 4 or 8.
        unshuffle: input pixels folded into channels per side before the body (1: none;
            Real-ESRGAN's x2 models use 2, its x1 models 4). The body then upsamples by
            ``scale * unshuffle`` in x2 steps.
    """

    architecture: ClassVar[str] = "rrdbnet"
    #: The fields a state dict's tensor shapes fix (a stored config is checked against them before any build).
    shape_fields: ClassVar[tuple[str, ...]] = ("in_channels", "out_channels", "nf", "nb", "gc", "scale", "unshuffle")

    in_channels: int = 3
    out_channels: int = 3
    nf: int = 64
    nb: int = 23
    gc: int = 32
    scale: int = 4
    unshuffle: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RRDBNetConfig.{f.name} must be a positive integer, got {value!r}")
        if self.scale not in (1, 2, 4, 8):
            raise ValueError(f"RRDBNetConfig.scale must be 1, 2, 4 or 8, got {self.scale}")
        if self.unshuffle not in (1, 2, 4):
            raise ValueError(f"RRDBNetConfig.unshuffle must be 1, 2 or 4, got {self.unshuffle}")
        if self.scale * self.unshuffle < 2:
            raise ValueError(
                f"RRDBNetConfig: scale {self.scale} with unshuffle {self.unshuffle} has no upsampling step; "
                "a x1 RRDBNet folds 4x4 pixels (unshuffle 4)"
            )

    @property
    def num_upsamples(self) -> int:
        """x2 upsampling steps of the body (conv_up1..)."""
        return int(math.log2(self.scale * self.unshuffle))

    @property
    def receptive_radius(self) -> int:
        """Input pixels of context that can reach an output pixel, per side (an upper bound).

        The 3x3 convolutions at body resolution (conv_first, 15 per RRDB, conv_body) count
        ``unshuffle`` input pixels each, those after each x2 step half as much; plus the
        unshuffle block and one pixel of nearest-neighbour alignment.
        """
        u = self.unshuffle
        body = u * (2 + 15 * self.nb)
        upsampling = sum(u * 0.5**j for j in range(1, self.num_upsamples + 1))
        high_res = 2 / self.scale  # conv_hr, conv_last
        return math.ceil(body + upsampling + high_res) + u

    @property
    def tile_context(self) -> int:
        """Default tile overlap: 16 input pixels, the engine's default from before models had their own
        (the receptive radius is far larger; what lies beyond 16 pixels changes little)."""
        return 16

    @property
    def tile_align(self) -> int:
        """Tiles start on the pixel-unshuffle grid (1: anywhere), so they fold the whole image's blocks."""
        return self.unshuffle

    @property
    def work_channels(self) -> int:
        """Activation elements per output pixel at the peak of one forward pass (memory planning).

        At output resolution the nearest-upsampled features, a convolution's output and its
        activation (nf each) are alive together, plus the output image; the body's dense
        concatenations (nf + 4 gc) live on a grid ``4**num_upsamples`` times smaller, and the
        input patch and its folded copies on one ``scale**2`` times smaller. Peaks measured by
        counting tensor bytes (as tests/test_engine_tiling.py does; nf 16 to 64, x8, x4, x2 and x1,
        float32 and bfloat16, 16- to 64-pixel tiles): this bound is 1.2 to 1.6 times them (x4,
        x8 and the unshuffling x2/x1 layouts) and 2.2 to 2.6 times for plain x2 RRDBNets.
        """
        body = math.ceil(4 * (self.nf + 4 * self.gc) / 4**self.num_upsamples)
        return 3 * self.nf + 16 + body + math.ceil(16 * self.in_channels / self.scale**2)

    @property
    def macs_per_input_pixel(self) -> float:
        """Multiply-accumulates of one forward pass per input pixel (every convolution; a fraction
        where the body runs on a folded grid)."""
        u2, s2 = self.unshuffle**2, self.scale**2
        nf = self.nf
        body = self.nb * rrdb_macs(nf, self.gc) + 9 * nf * nf  # RRDBs, conv_body, on the folded grid
        ups = sum(9 * nf * nf * 4**k for k in range(1, self.num_upsamples + 1))
        return 9 * self.in_channels * nf + (body + ups) / u2 + (9 * nf * nf + 9 * nf * self.out_channels) * s2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RRDBNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RRDBNetConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**{k: int(v) for k, v in data.items()})


class RRDBNet(nn.Module):
    """RRDBNet generator.

    Input: N x in_channels x H x W float tensor, RGB in [0, 1] (float32, float16 or bfloat16).
    Output: N x out_channels x (scale*H) x (scale*W) tensor of the same dtype, nominally
    [0, 1], NOT clamped. With ``unshuffle`` > 1, H and W need not be multiples of it: the
    input is reflect-padded to one and the output cropped back.
    """

    def __init__(self, *, config: RRDBNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or RRDBNetConfig()
        cfg = self.config
        nf = cfg.nf
        self.conv_first = conv3x3(cfg.in_channels * cfg.unshuffle**2, nf)
        self.body = nn.ModuleList(RRDB(channels=nf, growth=cfg.gc) for _ in range(cfg.nb))
        self.conv_body = conv3x3(nf, nf)
        for u in range(1, cfg.num_upsamples + 1):
            self.add_module(f"conv_up{u}", conv3x3(nf, nf))
        self.conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, cfg.out_channels)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.config.unshuffle
        height, width = x.shape[-2:]
        if u > 1:
            pad_h, pad_w = -height % u, -width % u
            if pad_h or pad_w:
                mode = "reflect" if pad_h < height and pad_w < width else "replicate"
                x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            x = F.pixel_unshuffle(x, u)
        feat = self.conv_first(x)
        body = feat
        for block in self.body:
            body = block(body)
        feat = feat + self.conv_body(body)
        for k in range(1, self.config.num_upsamples + 1):
            feat = act(getattr(self, f"conv_up{k}")(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(act(self.conv_hr(feat)))
        if u > 1:
            out = out[..., : height * self.scale, : width * self.scale]
        return out
