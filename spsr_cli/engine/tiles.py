"""Tiles without torch: the grid, the memory plan and the tile loop that every backend shares.

The input is cut into a grid of tiles ("cores") of at most ``tile`` input pixels per side.
Each core is run inside a patch of ``tile + 2 * tile_overlap`` pixels per side that gives it
at least ``tile_overlap`` input pixels of real context on every side (at the image border
the patch slides inward, so all patches have one shape), and only the core's part of the
output is kept, so neighbouring tiles never disagree across a seam by more than the
network's sensitivity to far-away context. Networks that cut their input into a fixed grid
(DAT's attention windows: ``config.tile_align`` > 1) get patches that start on that grid, so
that every window a patch sees is the window the whole image would have; their last patch
per row and column ends at the image border (it may be shorter), as the whole image does.

Memory: each tile's result is clamped, quantised and written straight into one
preallocated H x W x C array in the output's final storage type (uint8 or uint16 for
images), so an image costs its output array plus one tile's working set
(:func:`working_set_bytes`). Before an image starts, :meth:`Tiler.plan` checks that
this fits in the available memory (or ``memory_limit``) and picks the tile for
``--tile auto``; an image that cannot fit raises :class:`MemoryBudgetError` naming the
sizes and what to do, before anything large is allocated.

:class:`Tiler` is an upscaler less its network: :class:`~spsr_cli.engine.tiling.Upscaler` runs the
tiles through torch or OpenVINO, :class:`~spsr_cli.engine.fast_start.CachedOpenVINOUpscaler` through a
cached OpenVINO model without importing torch. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import numpy as np

from spsr_cli.engine.device import host_free_bytes
from spsr_cli.engine.options import MIN_TILE, InferenceOptions
from spsr_cli.errors import SPSRError, UsageError

if TYPE_CHECKING:  # a torch module's config; anything with the same fields does
    from spsr_cli.model.architectures import GeneratorConfig

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


def auto_tile_side(config: Any, itemsize: int, overlap: int, budget: int) -> int:
    """Largest tile (input pixels per side, multiple of 8) whose working set in activations of ``itemsize``
    bytes fits in ``budget`` bytes, for a network of ``config`` (:class:`~spsr_cli.model.architectures.
    GeneratorConfig`, or anything with its ``scale``, ``work_channels`` and ``tile_align``).

    At least :data:`MIN_TILE` (callers check that this fits) and at most :data:`MAX_AUTO_TILE` minus the
    context (and, for grid-aligned networks, the room a patch needs to start on the grid: its
    :func:`patch_side` stays within the budget's side).
    """
    out_pixels = max(0, budget - _WORK_BASE) / (config.work_channels * itemsize)
    side = int(math.sqrt(out_pixels) / config.scale)  # padded input side, context included
    align = config.tile_align
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


def is_cpu_oom(err: BaseException) -> bool:
    """Whether ``err`` is a failed allocation of the CPU (oneDNN, OpenVINO and the C++ runtime's words)."""
    return any(text in str(err) for text in _CPU_OOM_MESSAGES)


class Tiler:
    """An upscaler less its network: options, the memory plan, the tile loop, out-of-memory retries.

    Subclasses run the network (:meth:`_forward`), store a tile's result (:meth:`_store`) and say what the
    network computes in (:attr:`itemsize`, :attr:`compute_itemsize`); they call :meth:`_setup` first.

    Attributes:
        device: where the network runs (``torch.device``, or ``"cpu"``); ``device_type`` its kind.
        scale, config: the network's (``config``: what :func:`working_set_bytes` and the tiles need of a
            :class:`~spsr_cli.model.architectures.GeneratorConfig`).
        overlap, align: context per tile side (input pixels), and the grid patches start on.
        tile: the tile edge in use (input pixels; None: whole image). With ``--tile auto``
            this is the largest tile for the free memory at start (on the CPU at most
            :func:`cpu_auto_tile`); :meth:`plan` lowers it per image to what fits beside that
            image's output (on the CPU: to the tile of least compute, :func:`cpu_tile`). After an
            out-of-memory error it is halved and the smaller tile is kept for later images.
        max_batch: most tiles per forward pass (``MAX_TILE_BATCH`` on CUDA, 1 elsewhere).
    """

    device: Any
    device_type: str
    tile: int | None

    def _setup(self, config: Any, options: InferenceOptions, device_type: str) -> None:
        """Check ``options`` and set what the tiles need (all but :attr:`tile`: :meth:`_start_tile`)."""
        if options.tile_overlap is not None and options.tile_overlap < 0:
            raise UsageError(f"--tile-overlap must be >= 0, got {options.tile_overlap}")
        if isinstance(options.tile, int) and options.tile < 0:
            raise UsageError(f"--tile must be a positive number of pixels, 0 (whole image) or auto; got {options.tile}")
        if options.memory_limit is not None and options.memory_limit <= 0:
            raise UsageError(f"--max-memory must be positive, got {options.memory_limit} bytes")
        self.device_type = device_type
        self.scale: int = config.scale
        self.config = config
        self.overlap: int = config.tile_context if options.tile_overlap is None else options.tile_overlap
        self.align: int = config.tile_align  # patches start on the network's grid
        if self.overlap > config.receptive_radius:  # more context than can reach a pixel changes nothing
            log.warning(
                "--tile-overlap %d is more context than this model can use; using %d (its receptive radius)",
                self.overlap,
                config.receptive_radius,
            )
            self.overlap = config.receptive_radius
        self.memory_limit = options.memory_limit
        self.auto = options.tile == "auto"
        self.max_batch = MAX_TILE_BATCH if device_type == "cuda" else 1

    def _start_tile(self, options: InferenceOptions) -> None:
        """:attr:`tile` at start: ``--tile`` as given, or for ``auto`` the largest that fits the free memory."""
        if self.auto:
            budget = int(WORK_SHARE * self._device_free_bytes())
            self.tile = auto_tile_side(self.config, self.compute_itemsize, self.overlap, budget)
            if self.device_type == "cpu":
                self.tile = min(self.tile, cpu_auto_tile(self.itemsize))
        else:
            self.tile = int(options.tile) if options.tile else None

    # ------------------------------------------------------------------ what subclasses say

    @property
    def compute_itemsize(self) -> int:
        """Bytes per activation value in the precision expected to do the work (``--tile auto``'s tile)."""
        raise NotImplementedError

    @property
    def itemsize(self) -> int:
        """Bytes per activation value for planning: the widest precision the network may run in."""
        raise NotImplementedError

    def _device_free_bytes(self) -> int:
        """Free memory of the compute device (system memory unless a subclass says otherwise)."""
        return host_free_bytes()

    def _as_input(self, rgb: np.ndarray) -> Any:
        """H x W x 3 float32 array -> the 1 x 3 x H x W input :meth:`upscale_into` takes (a view)."""
        return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None]

    def _new_batch(self, n: int, channels: int, height: int, width: int, like: Any) -> Any:
        """An empty N x C x h x w float32 batch of patches of the input ``like``."""
        return np.empty((n, channels, height, width), np.float32)

    def _forward(self, patch: Any) -> Any:
        """N x 3 x h x w float patch -> N x 3 x sh x sw ``sr``, finite."""
        raise NotImplementedError

    def _store(self, sr: Any, dest: np.ndarray, peak: int | None) -> None:
        """Clamp one 3 x h x w result, quantise it to ``peak`` (None: keep float), copy it into ``dest`` (h x w x 3),
        by the rule of :func:`spsr_cli.io.images.quantise` (NaN -> 0, clip, round half to even)."""
        value = np.clip(np.nan_to_num(np.asarray(sr, dtype=np.float32), nan=0.0), 0.0, 1.0)
        if peak is not None:
            value = np.round(value * np.float32(peak))
        dest[...] = value.transpose(1, 2, 0)

    def _choose_backend(self, height: int, width: int) -> None:
        """Pick what runs an input of ``height`` x ``width`` pixels (one network: nothing to pick)."""

    def _running(self) -> ContextManager[Any]:
        """The context the tiles of one image run in (torch: inference mode)."""
        return contextlib.nullcontext()

    def _is_oom(self, err: RuntimeError) -> bool:
        return is_cpu_oom(err)

    def _release_memory(self) -> None:
        """Give back what an out-of-memory error left allocated (CUDA's cache)."""

    # ------------------------------------------------------------------ planning

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
        host_free = host_free_bytes()
        available = host_free if self.memory_limit is None else min(host_free, self.memory_limit)
        limit_name = "--max-memory" if self.memory_limit is not None and self.memory_limit <= host_free else "available"
        size = f"{width} x {height} image (output {width * s} x {height * s})"
        host_need = output + extra_bytes
        shared = self.device_type != "cuda"  # CPU and MPS work in system memory
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
        device_free = available - host_need if shared else self._device_free_bytes()
        budget = int(WORK_SHARE * device_free) if not shared or self.memory_limit is None else device_free
        tile = self.tile
        if self.auto:
            fit = auto_tile_side(self.config, self.compute_itemsize, self.overlap, budget)
            tile = min(tile or fit, fit)
            if self.device_type == "cpu":
                tile = cpu_tile(height, width, tile, self.overlap, self.align)
        work = self._work(tile, height, width)
        if work > device_free:
            where = "" if shared else f" on {self.device}"
            smaller = auto_tile_side(self.config, self.compute_itemsize, self.overlap, budget)
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

    def _run(self, x: Any, dest: np.ndarray, tile: int | None, batch: int, progress: Progress | None) -> None:
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
                    patch = self._new_batch(len(chunk), channels, h, w, x)
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

    def upscale_into(self, x: Any, dest: np.ndarray, plan: TilePlan, progress: Progress | None = None) -> np.ndarray:
        """Super-resolve ``x`` into ``dest`` following ``plan`` (from :meth:`plan`).

        Args:
            x: 1 x 3 x H x W float32 CPU tensor (or array, for the subclasses that take one: see
                :meth:`_as_input`) in [0, 1], any strides (a permuted view of an H x W x 3 array is used
                as it is, without a copy).
            dest: (scale*H) x (scale*W) x 3 array, uint8 (0..255), uint16 (0..65535) or
                float32 ([0, 1]); every pixel is written (clamped, rounded to nearest).
            plan: the tile and batch to use; halved on out-of-memory and retried.
            progress: called with (tiles done, tiles total) after every tile.

        Returns ``dest``. On out-of-memory (CUDA, or a failed CPU allocation) the batch and
        then the tile edge are halved and the image restarted (the smaller tile is kept
        for later images); below :data:`MIN_TILE` :class:`MemoryBudgetError` is raised.
        """
        if len(x.shape) != 4 or x.shape[0] != 1:
            raise ValueError(f"Upscaler expects a 1 x C x H x W tensor, got shape {tuple(x.shape)}")
        expected = (x.shape[2] * self.scale, x.shape[3] * self.scale, x.shape[1])
        if dest.shape != expected or dest.dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"dest must be a {expected} uint8, uint16 or float32 array, got {dest.shape} {dest.dtype}")
        tile, batch = plan.tile, plan.batch
        self._choose_backend(x.shape[2], x.shape[3])
        while True:
            try:
                with self._running():
                    self._run(x, dest, tile, batch, progress)
                return dest
            except RuntimeError as err:  # torch.OutOfMemoryError is one
                if not self._is_oom(err):
                    raise
                self._release_memory()
                if batch > 1:
                    batch //= 2
                    self.max_batch = batch
                    log.warning("out of memory; retrying with %d tiles per pass", batch)
                    continue
                current = tile or max(x.shape[-2:])
                if current // 2 < MIN_TILE:
                    raise MemoryBudgetError(
                        f"out of memory on {self.device} even with {current}-pixel tiles; "
                        "free memory" + (" on the device, or use --device cpu" if self.device_type == "cuda" else "")
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
        x = self._as_input(rgb)
        return self.upscale_into(x, dest, plan, progress)
