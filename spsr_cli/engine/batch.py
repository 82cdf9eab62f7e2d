"""``spsr upscale`` as a library: expand inputs into jobs, run them, report per-file results.

Nothing here prints: progress goes through callbacks, results come back as data.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from spsr_cli.engine.model_choice import ModelChoice
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.pipeline import Prefetcher, WriteBehind, upscale_image
from spsr_cli.engine.tiling import Progress
from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.engine.claims import claim_output, holder, remove_stale_claims
from spsr_cli.io.images import (
    SUPPORTED_EXTENSIONS, Image, is_image_path, is_writable_extension, read_image, write_image,
)
from spsr_cli.model.architectures import Generator

log = logging.getLogger(__name__)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Job:
    """One input image and where its result goes."""

    source: Path
    target: Path
    #: Why this job cannot be done (e.g. a GIF input without --ext); it then fails alone.
    problem: str | None = None


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
    #: The skipped jobs whose output another process was writing (or wrote) during this run.
    busy: list[Job] = field(default_factory=list)

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
    suffix = f"_x{scale:g}" if spec.suffix is None else spec.suffix
    single_file_target = _check_output_spec(spec, inputs, len(pairs), ext)
    jobs = []
    for source, root in pairs:
        if single_file_target:
            assert spec.output is not None
            target = spec.output if ext is None else spec.output.with_suffix(ext)
        else:
            name = f"{source.stem}{suffix}{ext or source.suffix}"
            folder = source.parent if spec.output is None else spec.output / source.parent.relative_to(root)
            target = folder / name
        problem = None
        if not is_writable_extension(target.suffix):  # only an input's own extension gets here (e.g. .gif)
            problem = (
                f"{source.suffix.lower()} files cannot be written; pass --ext png (or jpg, webp, tif, bmp) to "
                "upscale it (an animated image: its first frame)"
                if is_image_path(source) else
                f"{source.name} is not a supported image type ({', '.join(SUPPORTED_EXTENSIONS)}, .gif)"
            )
        jobs.append(Job(source=source, target=target, problem=problem))
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
    check_destinations(jobs)
    return jobs


def _check_output_spec(spec: OutputSpec, inputs: Sequence[str], count: int, ext: str | None) -> bool:
    """Validate --ext and -o before any work; True when -o names the single output file."""
    if ext is not None and not is_writable_extension(ext):
        raise UsageError(f"--ext {spec.ext!r} is not a format we write; use one of: {', '.join(SUPPORTED_EXTENSIONS)}")
    out = spec.output
    if out is None or out.is_dir():
        return False
    single = count == 1 and Path(inputs[0]).is_file()
    if out.exists() and not single:
        raise UsageError(
            f"-o {out} is an existing file, but the inputs are a folder, a pattern or several files; "
            "-o must name a folder for them"
        )
    if not out.suffix:
        return False  # a folder to create
    if not single:
        if is_image_path(out):
            raise UsageError(
                f"-o {out} looks like a file name, but the inputs are a folder, a pattern or several files "
                f"({count} image{'s' if count != 1 else ''}); name a folder for them (it is created)"
            )
        return False  # e.g. "-o results.v2": a folder to create
    if not is_writable_extension(out.suffix) and ext is None:
        raise UsageError(f"-o {out}: {out.suffix!r} is not a format we write; use one of: {', '.join(SUPPORTED_EXTENSIONS)}")
    return True


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_destinations(jobs: Sequence[Job]) -> None:
    """Refuse, before any image is computed, outputs that cannot be written.

    Every output folder (or its nearest existing ancestor, where it is to be created)
    must be a writable folder, and no output may be an existing folder.
    Raises :class:`UsageError` naming the path and the fix.
    """
    checked: set[Path] = set()
    for job in jobs:
        if job.target.is_dir():
            raise UsageError(f"the output {job.target} is an existing folder; choose another -o, --suffix or --ext")
        folder = _nearest_existing(job.target.parent)
        if folder in checked:
            continue
        checked.add(folder)
        if not folder.is_dir():
            raise UsageError(f"cannot write {job.target}: {folder} is a file, not a folder; choose another -o")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write into {folder}: permission denied; choose another -o or fix its permissions")


def shard(jobs: list[Job], rank: int | None = None, world_size: int | None = None) -> list[Job]:
    """This process's share under torchrun (``RANK``/``WORLD_SIZE``), else all jobs."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"RANK={rank} / WORLD_SIZE={world_size} is not a valid process layout")
    return jobs[rank::world_size]


def run_jobs(
    jobs: Iterable[Job],
    model: Generator | ModelChoice,
    options: InferenceOptions,
    *,
    outscale: float | None = None,
    quality: int = 95,
    skip_existing: bool = False,
    on_start: Callable[[Job], None] | None = None,
    on_tile: Progress | None = None,
    on_done: Callable[[Job, str | None], None] | None = None,
) -> BatchResult:
    """Upscale every job; one bad file is recorded and the rest go on.

    ``model``: one generator for every image, or a :class:`ModelChoice` (e.g. ``--model auto``)
    that picks each image's model (each loaded once).
    """
    if outscale is not None and outscale <= 0:
        raise UsageError(f"--outscale must be positive, got {outscale}")
    choice = model if isinstance(model, ModelChoice) else ModelChoice.of_module(model, options)
    result = BatchResult()
    jobs = list(jobs)
    started = time.time()
    for folder in {job.target.parent for job in jobs}:
        for stale in remove_stale_claims(folder):
            log.info("removed %s, left by an interrupted run", stale)

    def wanted(job: Job) -> bool:
        return job.problem is None and not (skip_existing and job.target.exists())

    def record(job: Job, outcome: object) -> None:
        """Book one finished job, in job order: None written, an exception failed, (kind, message) as settled."""
        if isinstance(outcome, BaseException) and not isinstance(outcome, (SPSRError, OSError, MemoryError)):
            raise outcome
        if outcome is None:
            result.done.append(job)
        elif isinstance(outcome, BaseException):
            log.debug("failed on %s", job.source, exc_info=outcome)
            outcome = ("failed", str(outcome) or type(outcome).__name__)
        if isinstance(outcome, tuple):
            kind, message = outcome
            if kind == "failed":
                result.failed.append((job, message))
            else:
                result.skipped.append(job)
                if kind == "busy":
                    result.busy.append(job)
        if on_done:
            on_done(job, None if outcome is None else f"failed: {outcome[1]}" if outcome[0] == "failed" else outcome[1])

    def write(job: Job, out: Image, claim: object) -> None:
        with claim:  # type: ignore[attr-defined]
            job.target.parent.mkdir(parents=True, exist_ok=True)
            write_image(job.target, out, quality=quality)

    # The next image is decoded and the previous one written on worker threads (one each).
    with Prefetcher(jobs, lambda job: read_image(job.source) if wanted(job) else None) as decoded, WriteBehind() as writer:
        for job, image, read_error in decoded:
            for finished in writer.finished():
                record(*finished)
            if job.problem is not None:
                writer.settle(job, ("failed", job.problem))
                continue
            if skip_existing and job.target.exists():
                writer.settle(job, ("skipped", SKIPPED))
                continue
            try:
                claim = claim_output(job.target)
            except OSError as err:
                writer.settle(job, ("failed", f"cannot write {job.target}: {err}"))
                continue
            if claim is None or _written_since(job.target, started):
                reason = (
                    f"{SKIPPED}: another process (pid {holder(job.target)}) is writing {job.target}" if claim is None
                    else f"{SKIPPED}: another process wrote {job.target} during this run"
                )
                if claim is not None:
                    claim.release()
                writer.settle(job, ("busy", reason))
                continue
            if on_start:
                on_start(job)
            try:
                if read_error is not None:
                    raise read_error
                image = image if image is not None else read_image(job.source)
                upscaler = choice.upscaler_for(job.source)
                out = upscale_image(image, upscaler, outscale=outscale, progress=on_tile, make_room=writer.make_room)
            except (SPSRError, OSError, MemoryError) as err:
                claim.release()
                writer.settle(job, err)
                continue
            except BaseException:
                claim.release()
                raise
            del image
            writer.submit(job, lambda job=job, out=out, claim=claim: write(job, out, claim))
            del out
        for finished in writer.drain():
            record(*finished)
    return result


#: ``on_done``'s message for a job left alone: an existing output, or one another process writes.
SKIPPED = "skipped"


def _written_since(target: Path, started: float) -> bool:
    """True when ``target`` was (re)written after ``started``: by a concurrent run, not us."""
    try:
        return target.stat().st_mtime >= started
    except OSError:
        return False
