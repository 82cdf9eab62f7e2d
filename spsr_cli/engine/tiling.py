"""Tiled inference: any image size in memory bounded by the tile, with invisible seams.

The input is cut into a grid of tiles ("cores") of at most ``tile`` input pixels per side.
Each core is run inside a patch of ``tile + 2 * tile_overlap`` pixels per side that gives it
at least ``tile_overlap`` input pixels of real context on every side (at the image border
the patch slides inward, so all patches have one shape), and only the core's part of the
output is kept, so neighbouring tiles never disagree across a seam by more than the
network's sensitivity to far-away context. Networks that cut their input into a fixed grid
(DAT's attention windows: ``config.tile_align`` > 1) get patches that start on that grid, so
that every window a patch sees is the window the whole image would have; their last patch
per row and column ends at the image border (it may be shorter), as the whole image does.

Backends: the network itself runs through a :class:`~spsr_cli.engine.backends.Backend` (torch,
or OpenVINO on the CPU); the tiling, planning and writing here are the same for every backend.
With ``--backend auto`` the backend is chosen per image (:meth:`Upscaler.backend_for`).

Memory: each tile's result is clamped, quantised and written straight into one
preallocated H x W x C array in the output's final storage type (uint8 or uint16 for
images), so an image costs its output array plus one tile's working set
(:func:`working_set_bytes`). Before an image starts, :meth:`Upscaler.plan` checks that
this fits in the available memory (or ``memory_limit``) and picks the tile for
``--tile auto``; an image that cannot fit raises :class:`MemoryBudgetError` naming the
sizes and what to do, before anything large is allocated.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from spsr_cli.engine.backends import Backend, make_backend, resolve_backend
from spsr_cli.engine.device import free_memory_bytes, resolve_device, resolve_dtype, use_channels_last
from spsr_cli.engine.options import MIN_TILE, InferenceOptions
from spsr_cli.errors import BackendError, SPSRError, UsageError
from spsr_cli.model.architectures import Generator, GeneratorConfig

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (tiles done, tiles total)
MAX_AUTO_TILE = 1024
#: Most tiles run in one forward pass on CUDA (several small tiles keep a large GPU busy).
MAX_TILE_BATCH = 16
#: On the CPU, ``--tile auto`` makes patches of at most (tile + 2 * overlap)**2 input pixels, the tile by the
#: bytes of one activation value: past these sizes a larger tile is barely faster on a CPU, it only costs
#: memory (measured: README, "CPU tiles"). In float32 a patch holds twice the bytes, so its tile is smaller
#: (a 512 x 340 photo with the default model: 1.74 GiB at 128, within 1.5 GB at 96).
CPU_AUTO_TILE: dict[int, int] = {2: 128, 4: 96}


def cpu_auto_tile(itemsize: int) -> int:
    """The CPU's ``--tile auto`` cap (:data:`CPU_AUTO_TILE`) for activations of ``itemsize`` bytes."""
    return CPU_AUTO_TILE.get(itemsize, min(CPU_AUTO_TILE.values()))


#: ``--backend auto``: the work (multiply-accumulates) of the images run so far after which a model not yet
#: converted for OpenVINO is converted (a one-time cost of roughly this much torch work; README, "Backends").
AUTO_CONVERT_MACS = 1e12
#: Share of the free memory the tiles' working set may use (the rest absorbs allocator
#: fragmentation, cuDNN workspaces and other processes).
WORK_SHARE = 0.5
#: Fixed part of the working set: low-resolution trunk activations of a small tile, allocator slack.
_WORK_BASE = 8 << 20

_CPU_OOM_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory", "bad_alloc")


class MemoryBudgetError(SPSRError):
    """An image needs more memory than is available (or than ``--max-memory`` allows)."""


def working_set_bytes(config: GeneratorConfig, out_pixels: int, itemsize: int) -> int:
    """Upper bound of the activation memory of one forward pass producing ``out_pixels`` pixels.

    The architecture's config says how many activation elements per output pixel its peak
    holds (``work_channels``, fitted to peaks measured by counting tensor bytes); a fixed
    8 MiB covers small low-resolution activations and allocator slack.
    """
    return _WORK_BASE + out_pixels * config.work_channels * itemsize


def auto_tile_size(
    model: Generator, device: torch.device, dtype: torch.dtype, overlap: int, budget: int | None = None
) -> int:
    """Largest tile (input pixels per side, multiple of 8) whose working set fits in ``budget``.

    ``budget`` defaults to :data:`WORK_SHARE` of the free memory of ``device``. The result
    is at least :data:`MIN_TILE` (callers check that this fits) and at most
    :data:`MAX_AUTO_TILE` minus the context (and, for grid-aligned networks, the room a patch
    needs to start on the grid: its :func:`patch_side` stays within the budget's side).
    """
    if budget is None:
        budget = int(WORK_SHARE * free_memory_bytes(device))
    itemsize = torch.finfo(dtype).bits // 8
    per_out_pixel = model.config.work_channels
    out_pixels = max(0, budget - _WORK_BASE) / (per_out_pixel * itemsize)
    side = int(math.sqrt(out_pixels) / model.scale)  # padded input side, context included
    align = model.config.tile_align
    side = min(MAX_AUTO_TILE, side) // align * align - 2 * overlap - (align - 1)
    return max(MIN_TILE, side // 8 * 8)


def patch_side(tile: int, overlap: int, align: int) -> int:
    """Input pixels per side of the patch a ``tile``-pixel core runs in: the core plus ``overlap``
    on both sides, and with ``align`` > 1 room to start on the grid, rounded up to a multiple of it."""
    if align == 1:
        return tile + 2 * overlap
    return -(-(tile + 2 * overlap + align - 1) // align) * align


def patch_span(start: int, stop: int, size: int, patch: int, overlap: int, align: int) -> tuple[int, int]:
    """The input rows (or columns) ``[p0, p1)`` of the patch for core rows ``[start, stop)`` of ``size``.

    ``patch`` is :func:`patch_side` (at most ``size``). With ``align`` 1 the patch slides inward at
    the border (every patch is ``patch`` long); otherwise it starts on a multiple of ``align``
    at least ``overlap`` before the core and ends ``patch`` later or at the border.
    """
    if align == 1:
        p0 = min(max(0, start - overlap), size - patch)
        return p0, p0 + patch
    p0 = max(0, start - overlap) // align * align
    return p0, min(size, p0 + patch)


def cpu_tile(height: int, width: int, largest: int, overlap: int, align: int = 1) -> int | None:
    """``--tile auto`` on the CPU: the tile for a ``height`` x ``width`` input whose grid of patches has
    the fewest pixels (the least compute), among patches of at most ``(largest + 2 * overlap)**2``
    pixels; None (one pass) when the whole image is no larger. Ties go to the larger tile.
    """
    limit = patch_side(largest, overlap, align) ** 2
    if height * width <= limit:
        return None
    best: tuple[int, int] | None = None  # (pixels, -tile)
    for tile in range(MIN_TILE, max(height, width) + 8, 8):
        side = patch_side(tile, overlap, align)
        ph, pw = min(height, side), min(width, side)
        if ph * pw > limit:
            break  # patches only grow with the tile
        pixels = math.ceil(height / tile) * math.ceil(width / tile) * ph * pw
        if best is None or (pixels, -tile) < best:
            best = (pixels, -tile)
    return MIN_TILE if best is None else -best[1]


def tile_grid(height: int, width: int, tile: int | None) -> list[tuple[int, int, int, int]]:
    """Balanced grid of (y0, y1, x0, x1) cores covering the image; one core if ``tile`` is falsy."""
    if not tile:
        return [(0, height, 0, width)]
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


@dataclass(frozen=True)
class TilePlan:
    """How one image will run.

    Attributes:
        tile: tile edge in input pixels, or None for the whole image in one pass.
        batch: tiles per forward pass.
        output_bytes: the output array (system memory).
        extra_bytes: what the caller said it needs besides (e.g. for writing the file).
        work_bytes: working set of one forward pass (on the compute device).
        available_bytes: memory the plan was checked against (system memory; VRAM on CUDA
            is checked separately and reported by the error when it does not fit).
    """

    tile: int | None
    batch: int
    output_bytes: int
    extra_bytes: int
    work_bytes: int
    available_bytes: int


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"


def _allowance(nbytes: int, limited: bool, where: str) -> str:
    return f"--max-memory allows {_gib(nbytes)}" if limited else f"{_gib(nbytes)} is available{where}"


def _is_cpu_oom(err: RuntimeError) -> bool:
    return any(text in str(err) for text in _CPU_OOM_MESSAGES)


class Upscaler:
    """Runs one generator over many images with the given inference options.

    The caller's model is never modified: a backend makes its own copy (torch: for the
    target device, dtype and memory format when they differ from the model's own).

    Attributes:
        device, dtype: where and in what precision the network runs (``dtype``: that of the backend
            expected to do the work, OpenVINO's under ``auto``; each backend has its own, see
            :func:`~spsr_cli.engine.device.resolve_dtype`).
        backend_choice: ``torch``, ``openvino`` or ``auto`` (resolved: see :meth:`backend_for`).
        backend: the backend of the image running now (or last run).
        tile: the tile edge in use (input pixels; None: whole image). With ``--tile auto``
            this is the largest tile for the free memory at start (on the CPU at most
            :func:`cpu_auto_tile`); :meth:`plan` lowers it per image to what fits beside that
            image's output (on the CPU: to the tile of least compute, :func:`cpu_tile`). After an
            out-of-memory error it is halved and the smaller tile is kept for later images.
        max_batch: most tiles per forward pass (``MAX_TILE_BATCH`` on CUDA, 1 elsewhere).
    """

    def __init__(self, model: Generator, options: InferenceOptions = InferenceOptions()) -> None:
        if options.tile_overlap is not None and options.tile_overlap < 0:
            raise UsageError(f"--tile-overlap must be >= 0, got {options.tile_overlap}")
        if isinstance(options.tile, int) and options.tile < 0:
            raise UsageError(f"--tile must be a positive number of pixels, 0 (whole image) or auto; got {options.tile}")
        if options.memory_limit is not None and options.memory_limit <= 0:
            raise UsageError(f"--max-memory must be positive, got {options.memory_limit} bytes")
        self.device = resolve_device(options.device)
        self.backend_choice = resolve_backend(options.backend, self.device, compile=options.compile)
        self._precision = options.precision
        # the precision of the backend expected to do the work (auto: OpenVINO); each backend has its own
        self.dtype = self._dtype_for("torch" if self.backend_choice == "torch" else "openvino")
        self.scale = model.scale
        self.config: GeneratorConfig = model.config
        self.overlap = model.config.tile_context if options.tile_overlap is None else options.tile_overlap
        self.align = model.config.tile_align  # patches start on the network's grid
        if self.overlap > model.config.receptive_radius:  # more context than can reach a pixel changes nothing
            log.warning(
                "--tile-overlap %d is more context than this model can use; using %d (its receptive radius)",
                self.overlap,
                model.config.receptive_radius,
            )
            self.overlap = model.config.receptive_radius
        self.memory_limit = options.memory_limit
        self.channels_last = use_channels_last(self.device)
        self._source = model
        self._compile = options.compile
        self._backends: dict[str, Backend] = {}
        self._auto_work = 0.0  # multiply-accumulates of the images so far (--backend auto)
        self._candidate: Backend | None = None  # the OpenVINO backend --backend auto may take
        self._held: Backend | None = None  # the backend of every input while one_backend() holds one
        self.backend: Backend = self._backend("torch" if self.backend_choice == "auto" else self.backend_choice)
        self.auto = options.tile == "auto"
        if self.auto:
            self.tile: int | None = auto_tile_size(model, self.device, self.dtype, self.overlap)
            if self.device.type == "cpu":
                self.tile = min(self.tile, cpu_auto_tile(self.itemsize))
        else:
            self.tile = int(options.tile) if options.tile else None
        self.max_batch = MAX_TILE_BATCH if self.device.type == "cuda" else 1

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
        as the images so far, this one included, add up to :data:`AUTO_CONVERT_MACS` of work (a
        few tiny images never pay for the one-time conversion); torch otherwise, and for good
        after OpenVINO failed to convert the model.
        """
        if self.backend_choice != "auto":
            return self._backend(self.backend_choice)
        self._auto_work += height * width * self.config.macs_per_input_pixel
        if "openvino" in self._backends or self._auto_work >= AUTO_CONVERT_MACS:
            return self._backend("openvino")
        if self._candidate is None:  # kept: its key (the weights' sha256) is computed once
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

    def _work(self, tile: int | None, height: int, width: int) -> int:
        """Working set of one tile (the largest padded patch of the grid)."""
        if tile:
            side = patch_side(tile, self.overlap, self.align)
            h, w = min(height, side), min(width, side)
        else:
            h, w = height, width
        return working_set_bytes(self.config, h * w * self.scale**2, self.itemsize)

    def plan(
        self, height: int, width: int, *, out_channels: int = 3, out_itemsize: int = 1, extra_bytes: int = 0
    ) -> TilePlan:
        """Check that an input of ``height`` x ``width`` pixels fits, and choose its tile.

        The image needs its output array (``out_channels`` x ``out_itemsize`` bytes per
        output pixel), ``extra_bytes`` more in system memory (the caller's, e.g. for
        encoding), and one tile's working set on the compute device (system memory too on
        CPU and MPS). Raises :class:`MemoryBudgetError` (sizes, need, availability and
        the fix) when it cannot fit.
        """
        s = self.scale
        output = height * s * width * s * out_channels * out_itemsize
        host_free = free_memory_bytes(torch.device("cpu"))
        available = host_free if self.memory_limit is None else min(host_free, self.memory_limit)
        limit_name = "--max-memory" if self.memory_limit is not None and self.memory_limit <= host_free else "available"
        size = f"{width} x {height} image (output {width * s} x {height * s})"
        host_need = output + extra_bytes
        shared = self.device.type != "cuda"  # CPU and MPS work in system memory
        min_work = self._work(min(MIN_TILE, self.tile or MIN_TILE), height, width)
        if host_need + (min_work if shared else 0) > available:
            parts = [f"output {_gib(output)}"] + [f"writing {_gib(extra_bytes)}"] * (extra_bytes > 0)
            parts += [f"{MIN_TILE}-pixel tiles {_gib(min_work)}"] * shared
            raise MemoryBudgetError(
                f"a {size} needs at least {_gib(host_need + (min_work if shared else 0))} of memory "
                f"({', '.join(parts)}) but "
                + _allowance(available, limit_name == "--max-memory", "")
                + "; "
                + (
                    "the output alone does not fit"
                    if host_need > available
                    else f"even {MIN_TILE}-pixel tiles do not fit beside the output"
                )
                + ", so a smaller --tile cannot help: downscale the input, free memory"
                + (", or raise --max-memory" if limit_name == "--max-memory" else ", or use a machine with more memory")
            )
        device_free = available - host_need if shared else free_memory_bytes(self.device)
        budget = int(WORK_SHARE * device_free) if not shared or self.memory_limit is None else device_free
        tile = self.tile
        if self.auto:
            fit = auto_tile_size(self._source, self.device, self.dtype, self.overlap, budget=budget)
            tile = min(tile or fit, fit)
            if self.device.type == "cpu":
                tile = cpu_tile(height, width, tile, self.overlap, self.align)
        work = self._work(tile, height, width)
        if work > device_free:
            where = "" if shared else f" on {self.device}"
            smaller = auto_tile_size(self._source, self.device, self.dtype, self.overlap, budget=budget)
            advice = (
                f"use --tile {smaller}" if self._work(smaller, height, width) <= device_free else "free memory"
            ) + (" or raise --max-memory" if shared and limit_name == "--max-memory" else "")
            parts = [f"output {_gib(output)}"] + [f"writing {_gib(extra_bytes)}"] * (extra_bytes > 0)
            raise MemoryBudgetError(
                f"a {size} with "
                + (f"{tile}-pixel tiles" if tile else "no tiling (--tile 0)")
                + f" needs about {_gib(work + (host_need if shared else 0))} "
                f"({', '.join(parts)}, tile working set {_gib(work)}) "
                "but "
                + _allowance(device_free + (host_need if shared else 0), shared and limit_name == "--max-memory", where)
                + f"; {advice}"
            )
        tiles = len(tile_grid(height, width, tile))
        batch = max(1, min(self.max_batch, tiles, int(budget // max(1, work))))
        return TilePlan(
            tile=tile,
            batch=batch,
            output_bytes=output,
            extra_bytes=extra_bytes,
            work_bytes=work,
            available_bytes=available,
        )

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

    def _run(self, x: torch.Tensor, dest: np.ndarray, tile: int | None, batch: int, progress: Progress | None) -> None:
        _, channels, height, width = x.shape
        s, ov = self.scale, self.overlap
        peak = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(dest.dtype)
        # Every patch has the same shape (tile + 2 * overlap, or the image): at the border the
        # window slides inward instead of shrinking, so one set of convolution kernels serves
        # the whole image (oneDNN and cuDNN plan per shape) and tiles batch together. Grid-aligned
        # networks (self.align > 1) keep their patches on the grid: the last row and column may be shorter.
        side = patch_side(tile, ov, self.align) if tile else max(height, width)
        ph, pw = min(height, side), min(width, side)
        groups: dict[tuple[int, int], list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]] = {}
        grid = tile_grid(height, width, tile)
        for y0, y1, x0, x1 in grid:
            py0, py1 = patch_span(y0, y1, height, ph, ov, self.align)
            px0, px1 = patch_span(x0, x1, width, pw, ov, self.align)
            groups.setdefault((py1 - py0, px1 - px0), []).append(((y0, y1, x0, x1), (py0, py1, px0, px1)))
        done = 0
        for (h, w), members in groups.items():
            for start in range(0, len(members), batch):
                chunk = members[start : start + batch]
                if len(chunk) == 1:
                    py0, py1, px0, px1 = chunk[0][1]
                    patch = x[:, :, py0:py1, px0:px1]
                else:
                    patch = torch.empty(len(chunk), channels, h, w, dtype=x.dtype, memory_format=torch.channels_last)
                    for k, (_, (py0, py1, px0, px1)) in enumerate(chunk):
                        patch[k] = x[0, :, py0:py1, px0:px1]
                sr = self._forward(patch)
                for k, ((y0, y1, x0, x1), (py0, _, px0, _)) in enumerate(chunk):
                    oy, ox = (y0 - py0) * s, (x0 - px0) * s
                    core = sr[k, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
                    self._store(core, dest[y0 * s : y1 * s, x0 * s : x1 * s], peak)
                    done += 1
                    if progress is not None:
                        progress(done, len(grid))

    @torch.inference_mode()
    def upscale_into(
        self, x: torch.Tensor, dest: np.ndarray, plan: TilePlan, progress: Progress | None = None
    ) -> np.ndarray:
        """Super-resolve ``x`` into ``dest`` following ``plan`` (from :meth:`plan`).

        Args:
            x: 1 x 3 x H x W float32 CPU tensor in [0, 1], any strides (a permuted view of an
                H x W x 3 array is used as it is, without a copy).
            dest: (scale*H) x (scale*W) x 3 array, uint8 (0..255), uint16 (0..65535) or
                float32 ([0, 1]); every pixel is written (clamped, rounded to nearest).
            plan: the tile and batch to use; halved on out-of-memory and retried.
            progress: called with (tiles done, tiles total) after every tile.

        Returns ``dest``. On out-of-memory (CUDA, or a failed CPU allocation) the batch and
        then the tile edge are halved and the image restarted (the smaller tile is kept
        for later images); below :data:`MIN_TILE` :class:`MemoryBudgetError` is raised.
        """
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"Upscaler expects a 1 x C x H x W tensor, got shape {tuple(x.shape)}")
        expected = (x.shape[2] * self.scale, x.shape[3] * self.scale, x.shape[1])
        if dest.shape != expected or dest.dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"dest must be a {expected} uint8, uint16 or float32 array, got {dest.shape} {dest.dtype}")
        tile, batch = plan.tile, plan.batch
        if self._held is not None:
            self.backend = self._held
        else:
            self.backend = self.backend_for(x.shape[2], x.shape[3])
            log.debug("%d x %d image: %s", x.shape[3], x.shape[2], self.backend.describe())
        while True:
            try:
                self._run(x, dest, tile, batch, progress)
                return dest
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not isinstance(err, torch.OutOfMemoryError) and not _is_cpu_oom(err):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch //= 2
                    self.max_batch = batch
                    log.warning("out of memory; retrying with %d tiles per pass", batch)
                    continue
                current = tile or max(x.shape[-2:])
                if current // 2 < MIN_TILE:
                    raise MemoryBudgetError(
                        f"out of memory on {self.device} even with {current}-pixel tiles; "
                        "free memory" + (" on the device, or use --device cpu" if self.device.type == "cuda" else "")
                    ) from None
                tile = self.tile = current // 2
                log.warning("out of memory; retrying with --tile %d", tile)

    def upscale_array(
        self,
        rgb: np.ndarray,
        *,
        dtype: type = np.uint8,
        extra_bytes: int = 0,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Super-resolve an H x W x 3 float32 array in [0, 1] into a new (sH) x (sW) x 3 ``dtype`` array.

        ``dtype`` is uint8, uint16 or float32. The memory check (:meth:`plan`) runs before
        the output is allocated; ``extra_bytes`` is what the caller will need besides.
        """
        height, width = rgb.shape[:2]
        plan = self.plan(height, width, out_itemsize=np.dtype(dtype).itemsize, extra_bytes=extra_bytes)
        try:
            dest = np.empty((height * self.scale, width * self.scale, 3), dtype)
        except MemoryError:
            raise MemoryBudgetError(
                f"cannot allocate the {_gib(plan.output_bytes)} output of a {width} x {height} image; free memory"
            ) from None
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        return self.upscale_into(x, dest, plan, progress)

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
