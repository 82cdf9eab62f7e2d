"""Tiled inference: any image size in bounded memory, with invisible seams.

The input is cut into a grid of tiles ("cores") of at most ``tile`` input pixels per side.
Each core is run with ``tile_overlap`` extra input pixels of real context on every side
(clipped at the image border), and only the core's part of the output is kept, so
neighbouring tiles never disagree across a seam by more than the network's sensitivity
to far-away context.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Callable

import torch

from spsr_cli.engine.device import free_memory_bytes, resolve_device, resolve_dtype
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.model.spsr import SPSRNet

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (tiles done, tiles total)
MIN_TILE = 32
MAX_AUTO_TILE = 1024
#: Rough peak activation channels per output pixel, in units of nf (measured from the
#: fusion RRDB, which runs at output resolution on 2*nf channels plus dense growth).
_ACTIVATION_FACTOR = 12


def auto_tile_size(model: SPSRNet, device: torch.device, dtype: torch.dtype, overlap: int) -> int:
    """Largest tile (input pixels per side) whose activations fit in half the free memory."""
    itemsize = torch.finfo(dtype).bits // 8
    per_input_pixel = model.scale**2 * _ACTIVATION_FACTOR * model.config.nf * itemsize
    side = int(math.sqrt(0.5 * free_memory_bytes(device) / per_input_pixel))
    side = min(MAX_AUTO_TILE, side) - 2 * overlap
    return max(MIN_TILE, side // 8 * 8)


def tile_grid(height: int, width: int, tile: int | None) -> list[tuple[int, int, int, int]]:
    """Balanced grid of (y0, y1, x0, x1) cores covering the image; one core if ``tile`` is falsy."""
    if not tile:
        return [(0, height, 0, width)]
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


class Upscaler:
    """Runs one generator over many images with the given inference options.

    The caller's model is never modified: a copy is made for the target device/dtype
    when it differs from the model's own.
    """

    def __init__(self, model: SPSRNet, options: InferenceOptions = InferenceOptions()) -> None:
        if options.tile_overlap < 0:
            raise UsageError(f"--tile-overlap must be >= 0, got {options.tile_overlap}")
        if isinstance(options.tile, int) and options.tile < 0:
            raise UsageError(f"--tile must be a positive number of pixels, 0 (whole image) or auto; got {options.tile}")
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(self.device, options.precision)
        self.scale = model.scale
        self.overlap = options.tile_overlap
        self._source = model
        self.model = self._prepared(self.dtype)
        self._fp32: SPSRNet | None = self.model if self.dtype == torch.float32 else None
        if options.tile == "auto":
            self.tile: int | None = auto_tile_size(model, self.device, self.dtype, self.overlap)
        else:
            self.tile = int(options.tile) if options.tile else None

    def _prepared(self, dtype: torch.dtype) -> SPSRNet:
        param = next(self._source.parameters())
        if param.device == self.device and param.dtype == dtype and not self._source.training:
            return self._source
        model = copy.deepcopy(self._source).to(self.device, dtype).eval()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def _forward(self, patch: torch.Tensor) -> torch.Tensor:
        inp = patch.to(self.device, self.dtype)
        if self.device.type == "cuda":
            inp = inp.contiguous(memory_format=torch.channels_last)
        sr = self.model(inp).sr
        if self.dtype != torch.float32 and not torch.isfinite(sr).all():
            log.warning("a tile overflowed in %s (NaN/Inf); recomputing it in float32", str(self.dtype).removeprefix("torch."))
            if self._fp32 is None:
                self._fp32 = self._prepared(torch.float32)
            sr = self._fp32(patch.to(self.device, torch.float32)).sr
        return sr.float().cpu()

    def _run(self, x: torch.Tensor, tile: int | None, progress: Progress | None) -> torch.Tensor:
        _, channels, height, width = x.shape
        s, ov = self.scale, self.overlap
        out = torch.empty(1, channels, height * s, width * s, dtype=torch.float32)
        grid = tile_grid(height, width, tile)
        for done, (y0, y1, x0, x1) in enumerate(grid, start=1):
            py0, py1, px0, px1 = max(0, y0 - ov), min(height, y1 + ov), max(0, x0 - ov), min(width, x1 + ov)
            result = self._forward(x[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = result[:, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
            if progress is not None:
                progress(done, len(grid))
        return out.clamp_(0.0, 1.0)

    @torch.inference_mode()
    def upscale(self, x: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
        """Super-resolve one image.

        Args:
            x: 1 x 3 x H x W float32 tensor in [0, 1] (any device; moved as needed).
            progress: called with (tiles done, tiles total) after every tile.

        Returns:
            1 x 3 x (scale*H) x (scale*W) float32 CPU tensor clamped to [0, 1].

        On CUDA out-of-memory the tile edge is halved and the image restarted (the smaller
        tile is kept for later images).
        """
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"Upscaler.upscale expects a 1 x C x H x W tensor, got shape {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        while True:
            try:
                return self._run(x, self.tile, progress)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                current = self.tile or max(x.shape[-2:])
                if current // 2 < MIN_TILE:
                    raise SPSRError(
                        f"out of memory on {self.device} even with {current}-pixel tiles; "
                        "free memory on the device, or use --device cpu"
                    ) from None
                self.tile = current // 2
                log.warning("out of memory; retrying with --tile %d", self.tile)


def upscale_tensor(model: SPSRNet, x: torch.Tensor, options: InferenceOptions = InferenceOptions(), progress: Progress | None = None) -> torch.Tensor:
    """One-off convenience around :class:`Upscaler` (use an ``Upscaler`` for many images)."""
    return Upscaler(model, options).upscale(x, progress)
