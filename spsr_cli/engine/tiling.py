"""Tiled inference through torch or OpenVINO: any image size in memory bounded by the tile, with invisible seams.

The tiles, the memory plan and the loop are :mod:`spsr_cli.engine.tiles` (the same for every backend; its
names are available here too); :class:`Upscaler` runs the network of a torch module through a
:class:`~spsr_cli.engine.backends.Backend` (torch, or OpenVINO on the CPU). With ``--backend auto`` the
backend is chosen per image (:meth:`Upscaler.backend_for`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager, Iterator

import numpy as np
import torch

from spsr_cli.engine.backends import Backend, make_backend, resolve_backend
from spsr_cli.engine.device import free_memory_bytes, resolve_device, resolve_dtype, use_channels_last
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiles import (
    CPU_AUTO_TILE,
    MAX_AUTO_TILE,
    MAX_TILE_BATCH,
    WORK_SHARE,
    MemoryBudgetError,
    Progress,
    TilePlan,
    Tiler,
    auto_tile_side,
    cpu_auto_tile,
    cpu_tile,
    is_cpu_oom,
    patch_side,
    patch_span,
    tile_grid,
    working_set_bytes,
)
from spsr_cli.errors import BackendError
from spsr_cli.model.architectures import Generator, GeneratorConfig

log = logging.getLogger(__name__)

#: ``--backend auto``: the input pixels of the images run so far after which a model not yet converted for
#: OpenVINO is converted, about where the torch time spent on them matches the conversion's one-time cost.
#: Counted in pixels, not multiply-adds: conversion and torch time both grow with the network's graph, so
#: that point is 15-105 thousand pixels for every architecture measured (README, "Backends"), while in
#: multiply-adds it spans 12x (DAT's attention and SRVGGNetCompact's small convolutions do little
#: arithmetic per second of torch).
AUTO_CONVERT_PIXELS = 40_000


def auto_tile_size(
    model: Generator, device: torch.device, dtype: torch.dtype, overlap: int, budget: int | None = None
) -> int:
    """Largest tile (input pixels per side, multiple of 8) whose working set fits in ``budget``
    (default: :data:`WORK_SHARE` of the free memory of ``device``): :func:`~spsr_cli.engine.tiles.auto_tile_side`
    for ``model`` computing in ``dtype``."""
    if budget is None:
        budget = int(WORK_SHARE * free_memory_bytes(device))
    return auto_tile_side(model.config, torch.finfo(dtype).bits // 8, overlap, budget)


class Upscaler(Tiler):
    """Runs one generator over many images with the given inference options.

    The caller's model is never modified: a backend makes its own copy (torch: for the
    target device, dtype and memory format when they differ from the model's own).

    Attributes:
        device, dtype: where and in what precision the network runs (``dtype``: that of the backend
            expected to do the work, OpenVINO's under ``auto``; each backend has its own, see
            :func:`~spsr_cli.engine.device.resolve_dtype`).
        backend_choice: ``torch``, ``openvino`` or ``auto`` (resolved: see :meth:`backend_for`).
        backend: the backend of the image running now (or last run).
        tile, max_batch, overlap, scale, config: as :class:`~spsr_cli.engine.tiles.Tiler` says.
    """

    def __init__(self, model: Generator, options: InferenceOptions = InferenceOptions()) -> None:
        device = resolve_device(options.device)
        self._setup(model.config, options, device.type)
        self.device = device
        self.backend_choice = resolve_backend(options.backend, self.device, compile=options.compile)
        self._precision = options.precision
        # the precision of the backend expected to do the work (auto: OpenVINO); each backend has its own
        self.dtype = self._dtype_for("torch" if self.backend_choice == "torch" else "openvino")
        self.config: GeneratorConfig = model.config
        self.channels_last = use_channels_last(self.device)
        self._source = model
        self._compile = options.compile
        self._backends: dict[str, Backend] = {}
        self._auto_pixels = 0  # input pixels of the images so far (--backend auto)
        self._candidate: Backend | None = None  # the OpenVINO backend --backend auto may take
        self._held: Backend | None = None  # the backend of every input while one_backend() holds one
        self.backend: Backend = self._backend("torch" if self.backend_choice == "auto" else self.backend_choice)
        self._start_tile(options)

    # ------------------------------------------------------------------ backends

    def _dtype_for(self, backend: str) -> torch.dtype:
        """``--precision`` for ``backend``: as given, else its fastest accurate one on this device."""
        return resolve_dtype(self.device, self._precision, backend)

    def _backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = make_backend(
                name, self._source, self.device, self._dtype_for(name), compile=self._compile
            )
        return self._backends[name]

    @property
    def model(self) -> torch.nn.Module:
        """The torch module the torch backend runs (prepared for the device, dtype and memory format)."""
        return self._backend("torch").model  # type: ignore[attr-defined, no-any-return]

    def backend_for(self, height: int, width: int) -> Backend:
        """The backend for an input of ``height`` x ``width`` pixels (it becomes :attr:`backend`).

        ``torch`` and ``openvino`` are what they say. ``auto`` on a CPU with OpenVINO installed
        takes OpenVINO once the model is converted (in this process or in the cache), or as soon
        as the images so far, this one included, add up to :data:`AUTO_CONVERT_PIXELS` (a few
        tiny images never pay for the one-time conversion); torch otherwise, and for good
        after OpenVINO failed to convert the model.
        """
        if self.backend_choice != "auto":
            return self._backend(self.backend_choice)
        self._auto_pixels += height * width
        if "openvino" in self._backends or self._auto_pixels >= AUTO_CONVERT_PIXELS:
            return self._backend("openvino")
        if self._candidate is None:  # kept: its conversion key is computed once
            self._candidate = make_backend("openvino", self._source, self.device, self._dtype_for("openvino"))
        if self._candidate.is_converted():  # type: ignore[attr-defined]
            self._backends["openvino"] = self._candidate
            return self._candidate
        return self._backend("torch")

    def warm_up(self, side: int) -> None:
        """Pay the one-off costs of the backend a ``side`` x ``side`` input would run through
        (:meth:`Backend.warm_up <spsr_cli.engine.backends.Backend.warm_up>`) before any image is timed."""
        self.backend_for(side, side).warm_up((1, self.config.in_channels, side, side))

    @contextlib.contextmanager
    def one_backend(self, height: int, width: int, count: int = 1) -> Iterator[Backend]:
        """Run the next inputs (``count`` of ``height`` x ``width``: a video's frames) through one backend,
        chosen once for all of them (``auto`` weighs their work together), so that a video never changes
        backend midway."""
        self.backend = self._held = self.backend_for(height * max(1, count), width)
        log.debug("%d x %d frames: %s", width, height, self.backend.describe())
        try:
            yield self.backend
        finally:
            self._held = None

    # ------------------------------------------------------------------ planning

    @property
    def itemsize(self) -> int:
        """Bytes per activation value for planning: the widest precision a backend of this upscaler may run in."""
        dtypes = [self.dtype, self._dtype_for("torch")] if self.backend_choice == "auto" else [self.dtype]
        return max(torch.finfo(d).bits // 8 for d in dtypes)

    @property
    def compute_itemsize(self) -> int:
        return torch.finfo(self.dtype).bits // 8

    def _device_free_bytes(self) -> int:
        return free_memory_bytes(self.device)

    # ------------------------------------------------------------------ running

    def _forward(self, patch: torch.Tensor) -> torch.Tensor:
        """N x 3 x h x w float patch (CPU, any strides) -> N x 3 x sh x sw ``sr`` on the device, finite."""
        backend = self.backend
        try:
            sr = backend.run(patch)
        except BackendError as err:
            if self.backend_choice != "auto" or backend.name == "torch":
                raise
            log.warning("%s; running it with torch", err)
            self.backend_choice = "torch"
            self.backend = backend = self._backend("torch")
            self._backends.pop("openvino", None)
            if self._held is not None:  # the rest of the video too
                self._held = backend
            sr = backend.run(patch)
        if backend.dtype != torch.float32 and not torch.isfinite(sr).all():
            log.warning(
                "a tile overflowed in %s (NaN/Inf); recomputing it in float32",
                str(backend.dtype).removeprefix("torch."),
            )
            sr = backend.run(patch, torch.float32)
        return sr

    def _store(self, sr: torch.Tensor, dest: np.ndarray, peak: int | None) -> None:
        """Clamp one 3 x h x w result, quantise it to ``peak`` (None: keep float), copy it into ``dest`` (h x w x 3).

        On the device, by the rule of :func:`spsr_cli.io.images.quantise` (NaN -> 0, clip, round half to even).
        """
        value = torch.nan_to_num(sr.float(), nan=0.0).clamp_(0.0, 1.0)
        if peak is not None:
            value = value.mul_(peak).round_()
            value = value.to(torch.uint8 if peak == 255 else torch.int32)
        dest[...] = value.permute(1, 2, 0).cpu().numpy()

    def _as_input(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)

    def _new_batch(self, n: int, channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(n, channels, height, width, dtype=like.dtype, memory_format=torch.channels_last)

    def _choose_backend(self, height: int, width: int) -> None:
        if self._held is not None:
            self.backend = self._held
        else:
            self.backend = self.backend_for(height, width)
            log.debug("%d x %d image: %s", width, height, self.backend.describe())

    def _running(self) -> ContextManager[Any]:
        return torch.inference_mode()

    def _is_oom(self, err: RuntimeError) -> bool:
        return isinstance(err, torch.OutOfMemoryError) or is_cpu_oom(err)

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def upscale(self, x: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
        """Super-resolve one image.

        Args:
            x: 1 x 3 x H x W float32 tensor in [0, 1] (any device; moved as needed).
            progress: called with (tiles done, tiles total) after every tile.

        Returns:
            1 x 3 x (scale*H) x (scale*W) float32 CPU tensor clamped to [0, 1].

        Memory is checked as by :meth:`plan` (float32 output); out-of-memory as in
        :meth:`upscale_into`.
        """
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"Upscaler.upscale expects a 1 x C x H x W tensor, got shape {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        plan = self.plan(x.shape[2], x.shape[3], out_itemsize=4)
        out = torch.empty(1, x.shape[1], x.shape[2] * self.scale, x.shape[3] * self.scale)
        self.upscale_into(x, out[0].permute(1, 2, 0).numpy(), plan, progress)
        return out


def upscale_tensor(
    model: Generator, x: torch.Tensor, options: InferenceOptions = InferenceOptions(), progress: Progress | None = None
) -> torch.Tensor:
    """One-off convenience around :class:`Upscaler` (use an ``Upscaler`` for many images)."""
    return Upscaler(model, options).upscale(x, progress)


__all__ = [  # what callers import from here: the upscaler, and the tiles' names it is built on
    "AUTO_CONVERT_PIXELS",
    "CPU_AUTO_TILE",
    "MAX_AUTO_TILE",
    "MAX_TILE_BATCH",
    "WORK_SHARE",
    "MemoryBudgetError",
    "Progress",
    "TilePlan",
    "Upscaler",
    "auto_tile_size",
    "cpu_auto_tile",
    "cpu_tile",
    "patch_side",
    "patch_span",
    "tile_grid",
    "upscale_tensor",
    "working_set_bytes",
]
