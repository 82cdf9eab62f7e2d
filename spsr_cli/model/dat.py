"""DAT: the Dual Aggregation Transformer (Chen et al., "Dual Aggregation Transformer for Image
Super-Resolution", ICCV 2023), in the DAT-light form (one residual group, pixel-shuffle-direct
upsampler). Written from the paper and checked against the published weights' keys and shapes.

The body alternates two kinds of transformer block on ``nf``-channel features:

* spatial blocks (even block index): half the channels attend within ``window_short x
  window_long`` windows, the other half within ``window_long x window_short`` windows, each
  with a dynamic relative-position bias (a small MLP of the offset, computed per window
  shape); every other spatial block (Swin style) shifts its windows by half a window and
  masks the pairs that the shift brought together;
* channel blocks (odd index): attention between channels over all positions (XCiT style,
  L2-normalised queries and keys, a learned temperature per head).

Both kinds run a depth-wise 3x3 convolution on the values beside the attention and let each
gate the other (the paper's adaptive interaction: a channel gate from global pooling, a
spatial gate from a 1x1 bottleneck), and are followed by a spatial-gate feed-forward network
(SGFN: GELU, then half the channels gated by a depth-wise conv of the other half). Each
residual group ends in a "3conv" (3x3 to nf/4, 1x1, 3x3 back) or one 3x3 convolution.

Padding: any input size runs. Inside each spatial block the window attention's queries, keys
and values are zero-padded to a multiple of the window (``window_multiple``) and its output
cropped back, so every window is full, as in the published model (measured on Set14 x4 with
the published weights: 0.02 dB better than reflect-padding the input image instead). The
channel attention and the pooled channel gates see the whole input: there is no finite
receptive field, so tiled and whole-image results differ slightly (see
:attr:`DATConfig.receptive_radius`).

Parameter names follow the published checkpoints (``conv_first``, ``layers.{g}.blocks.{b}.
{norm1,attn,ffn,norm2}``, ``layers.{g}.conv``, ``norm``, ``conv_after_body``, ``upsample.0``)
except ``norm_in`` (published: ``before_RG.1``). The published relative-position tables and
shift masks are derived here, never loaded; the batch norms are frozen (inference only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: DIV2K's mean RGB, subtracted before the network and added back after it (3-channel models).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
#: The attention logit of window pairs that a shift brought together from different image regions
#: (the published model adds it to theirs instead: the same outputs to float32 precision, e^-100 either way).
MASKED = -100.0
BN_EPS = 1e-5
#: Most tokens one attention window may hold (32 x 32): a window of N tokens builds an N x N index per
#: spatial branch, so a config claiming huge windows is refused before any network is built.
MAX_WINDOW_TOKENS = 1024


@dataclass(frozen=True)
class DATConfig:
    """Architecture hyper-parameters; stored with every weights file (defaults: DAT-light x4).

    Attributes:
        in_channels / out_channels: image channels (3 for RGB; they must be equal).
        nf: feature channels (embed dim). groups: residual groups. depth: blocks per group
            (alternating spatial and channel attention, spatial first). heads: attention heads
            (each spatial window shape gets half of them).
        ffn_channels: hidden channels of the feed-forward network (half of them gate the other half).
        window_short / window_long: the spatial windows are short x long and long x short.
        residual_convs: the convolution closing each group and the body: 3 ("3conv") or 1.
        scale: output size / input size (the pixel-shuffle-direct upsampler: one conv, one shuffle).
    """

    architecture: ClassVar[str] = "dat"
    #: The fields a state dict's tensor shapes fix (a stored config is checked against them before any
    #: build). The window shape is not among them (its tables are derived, not stored): it is bounded by
    #: :data:`MAX_WINDOW_TOKENS` instead.
    shape_fields: ClassVar[tuple[str, ...]] = (
        "in_channels",
        "out_channels",
        "nf",
        "groups",
        "depth",
        "heads",
        "ffn_channels",
        "residual_convs",
        "scale",
    )

    in_channels: int = 3
    out_channels: int = 3
    nf: int = 60
    groups: int = 1
    depth: int = 18
    heads: int = 6
    ffn_channels: int = 120
    window_short: int = 8
    window_long: int = 32
    residual_convs: int = 3
    scale: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DATConfig.{f.name} must be a positive integer, got {value!r}")
        if self.in_channels != self.out_channels:
            raise ValueError(f"DATConfig: in_channels {self.in_channels} != out_channels {self.out_channels}")
        if self.heads % 2 or self.nf % self.heads:
            raise ValueError(f"DATConfig: heads ({self.heads}) must be even and divide nf ({self.nf})")
        if self.ffn_channels % 2:
            raise ValueError(f"DATConfig.ffn_channels must be even, got {self.ffn_channels}")
        if self.residual_convs not in (1, 3):
            raise ValueError(f"DATConfig.residual_convs must be 1 or 3, got {self.residual_convs}")
        if self.nf < 16:
            raise ValueError(f"DATConfig.nf must be at least 16 (the spatial gate has nf / 16 channels), got {self.nf}")
        if not 1 <= self.scale <= 8:
            raise ValueError(f"DATConfig.scale must be 1 to 8, got {self.scale}")
        if self.window_short < 2 or self.window_long < 2:
            raise ValueError("DATConfig: windows must be at least 2 pixels per side")
        if self.window_short * self.window_long > MAX_WINDOW_TOKENS:
            raise ValueError(
                f"DATConfig: {self.window_short} x {self.window_long} windows hold "
                f"{self.window_short * self.window_long} tokens, more than {MAX_WINDOW_TOKENS} "
                "(each spatial block builds a tokens x tokens table; DAT's windows are 8 x 32 or 8 x 16)"
            )

    @property
    def window_multiple(self) -> int:
        """The window attention pads its input to a multiple of this (every window of both shapes full)."""
        return math.lcm(self.window_short, self.window_long)

    @property
    def receptive_radius(self) -> int:
        """Input pixels of context that the local operations can carry to an output pixel, per side.

        Each spatial block reaches ``window_long - 1`` pixels (the far end of a window) plus
        the depth-wise convolutions beside and after it; channel blocks only their
        convolutions; plus the group and body convolutions. The channel attention and the
        pooled gates see the whole input besides (no finite bound exists), so this is the
        bound of what tiling can usefully give as context, not an exactness guarantee.
        """
        spatial = (self.depth + 1) // 2
        channel = self.depth // 2
        residual = 2 if self.residual_convs == 3 else 1
        per_group = spatial * (self.window_long - 1 + 2) + channel * 2 + residual
        return 1 + self.groups * per_group + residual + 1

    @property
    def tile_context(self) -> int:
        """Default tile overlap: ``window_long`` (32 pixels for DAT-light), its measured local reach.

        Measured with the published DAT-light x4 on a 128-pixel Set14 crop: the mean gradient of
        an output pixel with respect to the input pixels at Chebyshev distance r falls from 1 to
        1e-3 by r = 16-28 and levels off at 4.5e-4 from r = 32 on (the channel attention and the
        pooled gates, which reach every pixel of a tile whatever the overlap). On a 256-pixel
        crop with 96-pixel tiles on the window grid, tiled vs whole: 43.2 dB without overlap,
        46.4 dB with 16, 47.8 dB with 32.
        """
        return self.window_long

    @property
    def tile_align(self) -> int:
        """Tiles start on the window grid (:attr:`window_multiple`), so their windows are the whole image's."""
        return self.window_multiple

    @property
    def work_channels(self) -> int:
        """Activation elements per output pixel at the peak of one forward pass (memory planning).

        At input resolution, a spatial block holds the features and their normalised copy,
        the q/k/v projections, their windowed copies for one window shape, the attention
        output and the interaction maps (about ``16 nf`` per input pixel together with the
        feed-forward's ``2 ffn_channels``); at output resolution the upsampler's
        ``out_channels`` channels, twice (conv and shuffle), the mean-restored output and the
        engine's clamped copy. Peaks measured by counting tensor bytes (tests/test_engine_tiling.py;
        DAT-light at x4, x3 and x2 and a 16-channel DAT, 32- to 64-pixel patches, float32) are 1.1 to
        1.65 times below this bound; patches whose sides are not a multiple of ``window_multiple``
        pad the attention inputs (48 -> 64 pixels: the low end of that range).
        """
        low = 14 * self.nf + 2 * self.ffn_channels + 4 * self.in_channels
        return math.ceil(low / self.scale**2) + 4 * self.out_channels

    @property
    def macs_per_input_pixel(self) -> float:
        """Multiply-accumulates of one forward pass per input pixel (sides a multiple of
        ``window_multiple``; padding adds attention work on other sizes): convolutions,
        linear layers and attention products (the global-pooling gates and the position-bias
        MLP cost a constant per image, left out)."""
        nf, f, d = self.nf, self.ffn_channels, self.nf // self.heads
        window = self.window_short * self.window_long
        ffn = nf * f + 9 * f // 2 + f // 2 * nf
        common = 3 * nf * nf + nf * nf + 9 * nf + (nf // 16) * (nf + 1) + ffn  # qkv, proj, dwconv, gate, ffn
        spatial = common + 2 * window * nf  # q.k and attn.v in both window shapes (half the channels each)
        channel = common + 2 * nf * d  # q.k and attn.v over channels
        quarter = nf // 4
        residual = 9 * nf * quarter + quarter * quarter + 9 * quarter * nf if self.residual_convs == 3 else 9 * nf * nf
        blocks = (self.depth + 1) // 2 * spatial + self.depth // 2 * channel
        upsample = 9 * nf * self.out_channels * self.scale**2
        return float(9 * self.in_channels * nf + self.groups * (blocks + residual) + residual + upsample)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DATConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DATConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**{k: int(v) for k, v in data.items()})


def is_shifted(group: int, block: int) -> bool:
    """Whether spatial block ``block`` of group ``group`` shifts its windows (DAT's schedule:
    blocks 2, 6, 10, ... in even groups, 0, 4, 8, ... in odd ones)."""
    if block % 2:
        return False
    if group % 2 == 0:
        return block > 0 and (block - 2) % 4 == 0
    return block % 4 == 0


# ---------------------------------------------------------------- building blocks


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics (inference only): ``(x - mean) / sqrt(var + eps) * weight + bias``.

    N x C x H x W -> same shape and dtype. Keys as :class:`torch.nn.BatchNorm2d` without
    ``num_batches_tracked``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + BN_EPS)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _interaction(nf: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """(depth-wise conv on the values, channel gate from global pooling, spatial gate) of one block."""
    dwconv = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1, groups=nf), FrozenBatchNorm2d(nf), nn.GELU())
    channel = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(nf, nf // 8, 1),
        FrozenBatchNorm2d(nf // 8),
        nn.GELU(),
        nn.Conv2d(nf // 8, nf, 1),
    )
    spatial = nn.Sequential(
        nn.Conv2d(nf, nf // 16, 1), FrozenBatchNorm2d(nf // 16), nn.GELU(), nn.Conv2d(nf // 16, 1, 1)
    )
    return dwconv, channel, spatial


def _mlp_stage(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(inp), nn.ReLU(), nn.Linear(inp, out))


def relative_offsets(window: tuple[int, int]) -> torch.Tensor:
    """Every (dy, dx) offset between two tokens of a ``window`` (h, w) window, row-major:
    (2h - 1)(2w - 1) x 2 float32 (the published files' ``rpe_biases``)."""
    wh, ww = window
    dy, dx = torch.meshgrid(torch.arange(1 - wh, wh), torch.arange(1 - ww, ww), indexing="ij")
    return torch.stack((dy.flatten(), dx.flatten()), 1).float()


def relative_pair_index(window: tuple[int, int]) -> torch.Tensor:
    """N x N int64 (N = h w tokens): the row of :func:`relative_offsets` holding token i's offset
    from token j (the published files' ``relative_position_index``)."""
    wh, ww = window
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :] + wh - 1) * (2 * ww - 1) + (xs[:, None] - xs[None, :] + ww - 1)


class PositionBias(nn.Module):
    """DAT's dynamic relative-position bias: an MLP from a (dy, dx) offset to one logit per head.

    ``forward()`` -> heads x N x N bias for the N = window_h * window_w tokens of a window
    (float32, the module's dtype). The offsets table and the token-pair index are derived
    from the window shape (buffers not saved with the weights).
    """

    def __init__(self, *, channels: int, heads: int, window: tuple[int, int]) -> None:
        super().__init__()
        hidden = max(channels // 4, 1)
        self.pos_proj = nn.Linear(2, hidden)
        self.pos1 = _mlp_stage(hidden, hidden)
        self.pos2 = _mlp_stage(hidden, hidden)
        self.pos3 = _mlp_stage(hidden, heads)
        self.register_buffer("offsets", relative_offsets(window), persistent=False)
        self.register_buffer("pair_index", relative_pair_index(window), persistent=False)

    def forward(self) -> torch.Tensor:
        table = self.pos3(self.pos2(self.pos1(self.pos_proj(self.offsets))))  # offsets x heads
        n = self.pair_index.shape[0]
        return table[self.pair_index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


def shift_pairs(height: int, width: int, window: tuple[int, int], device: torch.device) -> torch.Tensor:
    """nW x N x N bool: the token pairs of a shifted-window pass over a ``height x width`` grid (multiples
    of the window) that the half-window cyclic shift brought together across the border (True), which
    must not attend to each other; False for pairs from the same image region."""
    wh, ww = window

    def regions(n: int, size: int) -> torch.Tensor:
        pos = torch.arange(n, device=device)
        return (pos >= n - size).long() + (pos >= n - size // 2).long()

    region = regions(height, wh)[:, None] * 3 + regions(width, ww)[None, :]
    windows = region.reshape(height // wh, wh, width // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    return windows[:, :, None] != windows[:, None, :]


def shift_mask(height: int, width: int, window: tuple[int, int], device: torch.device) -> torch.Tensor:
    """nW x N x N float32 additive form of :func:`shift_pairs` (the published files' ``attn_mask``):
    0 for pairs from the same region, :data:`MASKED` for pairs the shift joined."""
    return shift_pairs(height, width, window, device).float() * MASKED


class WindowBranch(nn.Module):
    """Self-attention within non-overlapping ``window`` windows, with the position bias.

    ``forward(q, k, v, pairs)``: each B x H x W x C (H, W multiples of the window), ->
    B x H x W x C. With ``pairs`` (:func:`shift_pairs` of that H x W grid) the windows move by
    half a window (and back) and those pairs are masked; None: the windows stay in place.
    """

    def __init__(self, *, channels: int, heads: int, window: tuple[int, int]) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.pos = PositionBias(channels=channels // 4, heads=heads, window=window)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, h, w, c = t.shape
        wh, ww = self.window
        t = t.reshape(b, h // wh, wh, w // ww, ww, self.heads, c // self.heads)
        return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, (h // wh) * (w // ww), self.heads, wh * ww, c // self.heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pairs: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = q.shape
        wh, ww = self.window
        if pairs is not None:
            q, k, v = (torch.roll(t, shifts=(-(wh // 2), -(ww // 2)), dims=(1, 2)) for t in (q, k, v))
        # Written out, not F.scaled_dot_product_attention: the shift's pairs are set to MASKED (a select),
        # never added to the position bias. A mask added to the bias is nW x heads x N x N, which
        # OpenVINO folds into one constant per shifted branch at a fixed tile shape: a 642 MB compiled
        # model for a 160 x 160 tile of DAT-light x4 and 1.41 GiB for a 160 x 160 photo (written out,
        # the masks made once by DAT.forward: 32 MB, 0.37 GiB). torch's bfloat16 CPU forward is faster
        # written out too (README, "CPU tiles").
        q, k, v = self._split(q), self._split(k), self._split(v)  # B x nW x heads x N x d
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + self.pos().to(q.dtype)
        if pairs is not None:
            scores = scores.masked_fill(pairs.unsqueeze(1), MASKED)
        out = scores.softmax(dim=-1) @ v
        out = out.reshape(b, h // wh, w // ww, self.heads, wh, ww, c // self.heads)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)
        if pairs is not None:
            out = torch.roll(out, shifts=(wh // 2, ww // 2), dims=(1, 2))
        return out


class SpatialAttention(nn.Module):
    """DAT's adaptive spatial self-attention (two window shapes on the two channel halves, plus the
    convolution branch and the interaction gates). ``forward(x, pairs)``: B x H x W x C -> B x H x W x C;
    ``pairs``: :func:`shift_pairs` of the grid padded to whole windows, per window shape (used when the
    block shifts its windows; :class:`DAT` makes them once per forward)."""

    def __init__(self, *, nf: int, heads: int, windows: tuple[int, int], shifted: bool) -> None:
        super().__init__()
        short, long = windows
        self.shifted = shifted
        self.window_multiple = math.lcm(short, long)
        self.qkv = nn.Linear(nf, 3 * nf)
        self.proj = nn.Linear(nf, nf)
        self.attns = nn.ModuleList(
            WindowBranch(channels=nf // 2, heads=heads // 2, window=shape) for shape in ((short, long), (long, short))
        )
        self.dwconv, self.channel_interaction, self.spatial_interaction = _interaction(nf)

    def forward(self, x: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        _, height, width, c = x.shape
        qkv = self.qkv(x)
        v = qkv[..., 2 * c :]
        # Zero-pad q, k and v to whole windows (the published model's padding; the windows' outputs
        # are cropped back). Measured on Set14 x4: 0.02 dB better than reflect-padding the input.
        m = self.window_multiple
        padded = F.pad(qkv, (0, 0, 0, -width % m, 0, -height % m))
        half = c // 2
        attended = torch.cat(
            [
                branch(
                    *(padded[..., j * c + i * half : j * c + (i + 1) * half] for j in range(3)),
                    pairs[i] if self.shifted else None,
                )
                for i, branch in enumerate(self.attns)
            ],
            dim=-1,
        )[:, :height, :width]
        conv = self.dwconv(v.permute(0, 3, 1, 2))
        channel_gate = torch.sigmoid(self.channel_interaction(conv)).permute(0, 2, 3, 1)  # B x 1 x 1 x C
        spatial_gate = torch.sigmoid(self.spatial_interaction(attended.permute(0, 3, 1, 2)))  # B x 1 x H x W
        return self.proj(attended * channel_gate + (conv * spatial_gate).permute(0, 2, 3, 1))


class ChannelAttention(nn.Module):
    """DAT's adaptive channel self-attention (channels attend to channels over all positions, plus
    the convolution branch and the interaction gates). B x H x W x C -> B x H x W x C."""

    def __init__(self, *, nf: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(nf, 3 * nf)
        self.proj = nn.Linear(nf, nf)
        self.dwconv, self.channel_interaction, self.spatial_interaction = _interaction(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv[0], qkv[1], qkv[2]  # B x heads x d x HW
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        attended = (attn.softmax(dim=-1) @ v).reshape(b, c, h, w)
        conv = self.dwconv(v.reshape(b, c, h, w))
        channel_gate = torch.sigmoid(self.channel_interaction(attended))  # B x C x 1 x 1
        spatial_gate = torch.sigmoid(self.spatial_interaction(conv))  # B x 1 x H x W
        return self.proj((attended * spatial_gate + conv * channel_gate).permute(0, 2, 3, 1))


class SpatialGate(nn.Module):
    """Half the channels times a depth-wise 3x3 conv of the (normalised) other half.
    B x H x W x 2C -> B x H x W x C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x1 * self.conv(self.norm(x2).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SGFN(nn.Module):
    """Spatial-gate feed-forward network. B x H x W x C -> B x H x W x C."""

    def __init__(self, *, nf: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(nf, hidden)
        self.sg = SpatialGate(hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.sg(F.gelu(self.fc1(x))))


class DATBlock(nn.Module):
    """Pre-norm transformer block: spatial (even index) or channel (odd) attention, then the SGFN.
    ``forward(x, pairs)``: B x H x W x C -> B x H x W x C (``pairs``: as :class:`SpatialAttention`'s)."""

    def __init__(self, *, config: DATConfig, group: int, index: int) -> None:
        super().__init__()
        nf = config.nf
        self.norm1 = nn.LayerNorm(nf)
        self.attn: nn.Module
        if index % 2 == 0:
            windows = (config.window_short, config.window_long)
            self.attn = SpatialAttention(nf=nf, heads=config.heads, windows=windows, shifted=is_shifted(group, index))
        else:
            self.attn = ChannelAttention(nf=nf, heads=config.heads)
        self.ffn = SGFN(nf=nf, hidden=config.ffn_channels)
        self.norm2 = nn.LayerNorm(nf)

    def forward(self, x: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + (self.attn(normed, pairs) if isinstance(self.attn, SpatialAttention) else self.attn(normed))
        return x + self.ffn(self.norm2(x))


def _residual_conv(nf: int, convs: int) -> nn.Module:
    if convs == 1:
        return nn.Conv2d(nf, nf, 3, 1, 1)
    q = nf // 4
    return nn.Sequential(
        nn.Conv2d(nf, q, 3, 1, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(q, q, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(q, nf, 3, 1, 1),
    )


class ResidualGroup(nn.Module):
    """``depth`` blocks, then the residual convolution(s), plus the group's input.
    B x H x W x C -> B x H x W x C."""

    def __init__(self, *, config: DATConfig, group: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DATBlock(config=config, group=group, index=i) for i in range(config.depth))
        self.conv = _residual_conv(config.nf, config.residual_convs)

    def forward(self, x: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        out = x
        for block in self.blocks:
            out = block(out, pairs)
        return x + self.conv(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class DAT(nn.Module):
    """DAT generator (pixel-shuffle-direct upsampler).

    Input: N x in_channels x H x W float tensor, RGB in [0, 1] (float32, float16 or bfloat16),
    any H and W (the window attention pads to whole windows inside and crops back).
    Output: N x out_channels x (scale*H) x (scale*W) tensor of the same dtype, nominally
    [0, 1], NOT clamped.
    """

    def __init__(self, *, config: DATConfig | None = None) -> None:
        super().__init__()
        self.config = config or DATConfig()
        cfg = self.config
        nf = cfg.nf
        mean = RGB_MEAN if cfg.in_channels == 3 else (0.0,) * cfg.in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(cfg.in_channels, nf, 3, 1, 1)
        self.norm_in = nn.LayerNorm(nf)
        self.layers = nn.ModuleList(ResidualGroup(config=cfg, group=g) for g in range(cfg.groups))
        self.norm = nn.LayerNorm(nf)
        self.conv_after_body = _residual_conv(nf, cfg.residual_convs)
        self.upsample = nn.Sequential(
            nn.Conv2d(nf, cfg.out_channels * cfg.scale**2, 3, 1, 1), nn.PixelShuffle(cfg.scale)
        )

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        feat = self.conv_first(x - mean)
        tokens = self.norm_in(feat.permute(0, 2, 3, 1))
        # The shifted blocks' masks, made once for all of them: a traced model then holds one constant
        # per window shape at a fixed input size, not one per shifted block (OpenVINO folds them).
        cfg, (height, width) = self.config, x.shape[-2:]
        m = math.lcm(cfg.window_short, cfg.window_long)  # SpatialAttention pads to whole windows of both shapes
        grid = (height + (-height % m), width + (-width % m))
        windows = ((cfg.window_short, cfg.window_long), (cfg.window_long, cfg.window_short))
        pairs = (shift_pairs(*grid, windows[0], x.device), shift_pairs(*grid, windows[1], x.device))
        for group in self.layers:
            tokens = group(tokens, pairs)
        body = self.conv_after_body(self.norm(tokens).permute(0, 3, 1, 2))
        return self.upsample(body + feat) + mean
