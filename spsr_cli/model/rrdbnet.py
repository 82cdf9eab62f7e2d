"""ESRGAN's RRDBNet, the network SPSR's SR branch grows from (BasicSR key names).

Used to check the exact warm start (:mod:`spsr_cli.train.pretrained`) and to score
an init source on its own. Parameter names follow BasicSR: ``conv_first``,
``body.{i}.rdb{k}.conv{j}``, ``conv_body``, ``conv_up{u}``, ``conv_hr``, ``conv_last``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spsr_cli.model.blocks import RRDB, act, conv3x3


class RRDBNet(nn.Module):
    """Plain RRDBNet (no pixel-unshuffle).

    Input: N x in_channels x H x W float, RGB in [0, 1]. Output: N x out_channels x sH x sW
    (not clamped), same dtype.
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, nf: int = 64, nb: int = 23,
                 gc: int = 32, scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"RRDBNet scale must be 2, 4 or 8, got {scale}")
        self.scale = scale
        self.conv_first = conv3x3(in_channels, nf)
        self.body = nn.ModuleList(RRDB(channels=nf, growth=gc) for _ in range(nb))
        self.conv_body = conv3x3(nf, nf)
        for u in range(1, int(math.log2(scale)) + 1):
            self.add_module(f"conv_up{u}", conv3x3(nf, nf))
        self.conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        body = feat
        for block in self.body:
            body = block(body)
        feat = feat + self.conv_body(body)
        for u in range(1, int(math.log2(self.scale)) + 1):
            feat = act(getattr(self, f"conv_up{u}")(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(act(self.conv_hr(feat)))
