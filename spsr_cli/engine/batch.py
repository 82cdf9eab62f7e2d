"""``spsr upscale`` as a library: expand inputs into jobs, run them, report per-file results.

Nothing here prints: progress goes through callbacks, results come back as data.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiling import Progress, Upscaler
from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.io.images import Image, format_for_extension, is_image_path, read_image, resize_plane, write_image
from spsr_cli.model.spsr import SPSRNet

log = logging.getLogger(__name__)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Job:
    """One input image and where its result goes."""

    source: Path
    target: Path


@dataclass(frozen=True)
class OutputSpec:
    """How output paths are formed.

    Attributes:
        output: a file (single input only) or a folder; None writes beside each input.
        suffix: appended to the input's stem (default ``_x4`` for the model's scale).
        ext: output extension such as ``png`` or ``.jpg``; None keeps the input's.
    """

    output: Path | None = None
    suffix: str | None = None
    ext: str | None = None


@dataclass
class BatchResult:
    done: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _expand_one(item: str, recursive: bool) -> list[tuple[Path, Path]]:
    """(file, root it is relative to) pairs for one CLI argument."""
    path = Path(item).expanduser()
    if path.is_file():
        return [(path, path.parent)]
    if path.is_dir():
        walker = path.rglob("*") if recursive else path.glob("*")
        return [(p, path) for p in sorted(walker) if p.is_file() and is_image_path(p)]
    if _GLOB_CHARS & set(item):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True))
        files = [p for p in matches if p.is_file() and is_image_path(p)]
        if not files:
            raise UsageError(f"the pattern {item!r} matches no image files")
        return [(p, p.parent) for p in files]
    raise UsageError(f"input {item!r} does not exist")


def plan_jobs(inputs: Sequence[str], spec: OutputSpec, *, scale: int, recursive: bool = False) -> list[Job]:
    """Expand files, folders and globs into jobs; refuse any output that would overwrite an input."""
    if not inputs:
        raise UsageError("no input given: pass image files, folders or glob patterns")
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        pairs.extend(_expand_one(item, recursive))
    if not pairs:
        raise UsageError(f"no images found in {', '.join(inputs)} (use --recursive for sub-folders)")
    ext = "." + spec.ext.lower().lstrip(".") if spec.ext else None
    suffix = f"_x{scale}" if spec.suffix is None else spec.suffix
    single_file_target = (
        spec.output is not None and len(pairs) == 1 and Path(inputs[0]).is_file() and spec.output.suffix != "" and not spec.output.is_dir()
    )
    jobs = []
    for source, root in pairs:
        if single_file_target:
            assert spec.output is not None
            target = spec.output if ext is None else spec.output.with_suffix(ext)
        else:
            name = f"{source.stem}{suffix}{ext or source.suffix}"
            folder = source.parent if spec.output is None else spec.output / source.parent.relative_to(root)
            target = folder / name
        format_for_extension(target.suffix)  # unknown --ext or output extension: ImageError naming it
        jobs.append(Job(source=source, target=target))
    sources = {j.source.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        resolved = job.target.resolve()
        if resolved in sources:
            raise UsageError(
                f"output {job.target} would overwrite the input image {resolved}; choose another -o, --suffix or --ext"
            )
        if resolved in seen:
            raise UsageError(f"inputs {seen[resolved]} and {job.source} would both be written to {job.target}")
        seen[resolved] = job.source
    return jobs


def shard(jobs: list[Job], rank: int | None = None, world_size: int | None = None) -> list[Job]:
    """This process's share under torchrun (``RANK``/``WORLD_SIZE``), else all jobs."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"RANK={rank} / WORLD_SIZE={world_size} is not a valid process layout")
    return jobs[rank::world_size]


def upscale_image(image: Image, upscaler: Upscaler, *, outscale: float | None = None, progress: Progress | None = None) -> Image:
    """Super-resolve an :class:`Image`; alpha is resized separately and re-attached.

    ``outscale`` (default: the model's scale) resizes the network output to
    ``round(outscale * input size)``.
    """
    height, width = image.rgb.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image.rgb.transpose(2, 0, 1))).unsqueeze(0)
    sr = upscaler.upscale(x, progress)[0].permute(1, 2, 0).numpy()
    factor = upscaler.scale if outscale is None else outscale
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if size != sr.shape[:2]:
        sr = resize_plane(sr, size)
    alpha = resize_plane(image.alpha, size) if image.alpha is not None else None
    return dataclasses.replace(image, rgb=np.ascontiguousarray(sr, dtype=np.float32), alpha=alpha)


def run_jobs(
    jobs: Iterable[Job],
    model: SPSRNet,
    options: InferenceOptions,
    *,
    outscale: float | None = None,
    quality: int = 95,
    skip_existing: bool = False,
    on_start: Callable[[Job], None] | None = None,
    on_tile: Progress | None = None,
    on_done: Callable[[Job, str | None], None] | None = None,
) -> BatchResult:
    """Upscale every job; one bad file is recorded and the rest go on."""
    if outscale is not None and outscale <= 0:
        raise UsageError(f"--outscale must be positive, got {outscale}")
    upscaler = Upscaler(model, options)
    result = BatchResult()
    for job in jobs:
        if skip_existing and job.target.exists():
            result.skipped.append(job)
            if on_done:
                on_done(job, "skipped")
            continue
        if on_start:
            on_start(job)
        try:
            image = read_image(job.source)
            out = upscale_image(image, upscaler, outscale=outscale, progress=on_tile)
            job.target.parent.mkdir(parents=True, exist_ok=True)
            write_image(job.target, out, quality=quality)
        except (SPSRError, OSError) as err:
            log.debug("failed on %s", job.source, exc_info=True)
            result.failed.append((job, str(err)))
            if on_done:
                on_done(job, f"failed: {err}")
            continue
        result.done.append(job)
        if on_done:
            on_done(job, None)
    return result
