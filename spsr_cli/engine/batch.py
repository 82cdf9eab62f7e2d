"""``spsr upscale`` as a library: expand inputs into jobs, run them, report per-file results.

Nothing here prints: progress goes through callbacks, results come back as data.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

from spsr_cli.engine.claims import claim_output, holder, remove_stale_claims
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.files import NAME_MAX
from spsr_cli.io.images import (
    SUPPORTED_EXTENSIONS,
    Image,
    count_frames,
    image_size,
    is_image_path,
    is_writable_extension,
    read_image,
    write_image,
)

if TYPE_CHECKING:  # torch (with the pipeline and tiling) is imported when an image needs the network:
    from spsr_cli.engine.model_choice import ModelChoice  # a rerun with nothing to do never loads it
    from spsr_cli.engine.pipeline import Prefetcher, WriteBehind
    from spsr_cli.engine.tiling import Progress, Upscaler
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
class JobReport:
    """What happened to one job, for logs and ``--json`` records.

    ``status`` is ``written``, ``skipped`` (an existing output, or one another process writes) or
    ``failed``; ``reason`` says why for the last two. Sizes are (width, height) in pixels.
    ``seconds``: from the image's decode to its write, without one-off costs (loading a model, its
    warm-up). ``model``: under ``--model auto``, the model chosen for it and why.
    """

    source: Path
    target: Path
    status: str
    reason: str | None = None
    seconds: float | None = None
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    tiles: int | None = None
    #: The backend that ran the network on it (``torch`` or ``openvino``).
    backend: str | None = None
    model: dict | None = None

    def to_json(self) -> dict:
        return {
            "input": os.fsdecode(self.source),
            "output": os.fsdecode(self.target),
            "status": self.status,
            "reason": self.reason,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "input_size": list(self.input_size) if self.input_size else None,
            "output_size": list(self.output_size) if self.output_size else None,
            "tiles": self.tiles,
            "backend": self.backend,
            **({"model": self.model} if self.model is not None else {}),
        }


class ModelLoader:
    """Loads the model ``source`` names on the first call (a rerun with nothing to do never
    loads it) and remembers its file and sha256 for reports."""

    def __init__(self, source: str | None, *, offline: bool | None = None) -> None:
        self.source = source
        self.offline = offline
        self.path: Path | None = None
        self.sha256: str | None = None
        self.load_seconds: float | None = None
        self._model: Generator | None = None

    def scale(self) -> int:
        """The model's scale, without loading or downloading it where the registry entry or the
        ``.safetensors`` header tells; otherwise (a ``.pth`` file) the model is loaded to learn it."""
        if self._model is None:
            known = registry_scale(self.source)
            if known is not None:
                return known
        return self().scale

    @property
    def module(self) -> Generator | None:
        """The loaded model, or None when no image needed it (yet)."""
        return self._model

    @property
    def is_default(self) -> bool:
        """Whether this is the registry's default model (``--model`` not given, or naming it)."""
        if self.source is None:
            return True
        from spsr_cli.weights.manifest import load_manifest_json

        try:
            return self.source == load_manifest_json()[1]
        except (SPSRError, OSError, ValueError):
            return False

    def __call__(self) -> Generator:
        if self._model is None:
            from spsr_cli.files import sha256_file
            from spsr_cli.weights.loader import load_generator, resolve_weights

            started = time.perf_counter()
            self.path = resolve_weights(self.source, offline=self.offline)
            self.sha256 = sha256_file(self.path)
            self._model = load_generator(self.path)
            self.load_seconds = time.perf_counter() - started
            log.debug("model %s: %s, sha256 %s", self.source or "(default)", self.path, self.sha256)
        return self._model


def registry_scale(source: str | None) -> int | None:
    """The scale of the model ``source`` names from its registry entry or its ``.safetensors``
    header (no torch, no download); None when only loading it can tell."""
    import json

    from spsr_cli.weights.manifest import load_manifest_json

    try:
        path = Path(str(source)).expanduser() if source is not None else None
        if path is not None and path.suffix.lower() == ".safetensors" and path.is_file():
            with open(path, "rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(min(length, 1 << 24)))
            return int(json.loads(header["__metadata__"]["config"]).get("scale", 4))
        models, default = load_manifest_json()
        raw = models.get(default if source is None else str(source))
        return int(raw.get("scale") or raw["config"]["scale"]) if raw else None
    except (SPSRError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # loading the model says what is wrong


@dataclass
class BatchResult:
    done: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    #: The skipped jobs whose output another process was writing (or wrote) during this run.
    busy: list[Job] = field(default_factory=list)
    #: One report per job, in job order.
    reports: list[JobReport] = field(default_factory=list)
    #: How the network ran (``device``, ``precision``, ``tile``, ``tile_overlap``, ``backend``: the backends
    #: that ran, or the choice when none did); empty when no image needed it.
    settings: dict = field(default_factory=dict)
    #: Per model used: ``load_seconds`` and ``warm_up_seconds`` (:attr:`ModelChoice.one_off`).
    one_off: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _is_file(path: Path) -> bool:
    """``path.is_file()``, with a folder we may not search counting as a file to report (not a crash)."""
    try:
        return path.is_file()
    except PermissionError:
        return True  # read_image (or the job's problem) says what is wrong with it


def _walk(root: Path, recursive: bool) -> list[Path]:
    """Image files in ``root`` (and its sub-folders with ``recursive``), sorted; an unreadable
    sub-folder is left out with a warning naming it."""
    found: list[Path] = []

    def unreadable(err: OSError) -> None:
        if Path(err.filename or "") != root:
            log.warning("cannot read the folder %s (%s): its images are left out", err.filename, err.strerror or err)

    for folder, subfolders, names in os.walk(root, onerror=unreadable):
        subfolders.sort()
        found.extend(Path(folder) / n for n in names if is_image_path(Path(n)) and _is_file(Path(folder) / n))
        if not recursive:
            visible = [name for name in subfolders if not name.startswith(".")]
            if visible:
                log.info(
                    "%s: %d sub-folder%s (%s) left out; pass --recursive (-r) to upscale their images too",
                    root,
                    len(visible),
                    "" if len(visible) == 1 else "s",
                    ", ".join(visible[:3]) + (", ..." if len(visible) > 3 else ""),
                )
            break
    return sorted(found)


def _expand_one(item: str, recursive: bool) -> tuple[list[tuple[Path, Path]], bool]:
    """(file, root it is relative to) pairs for one CLI argument, and whether it was a folder or pattern."""
    path = Path(item).expanduser()
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except PermissionError:  # a folder on the way may not be searched: the file fails alone
        return [(path, path.parent)], False
    if is_file:
        return [(path, path.parent)], False
    if is_dir:
        try:
            os.listdir(path)
        except OSError as err:
            raise UsageError(f"cannot read the folder {path}: {err.strerror or err}; fix its permissions") from None
        return [(p, path) for p in _walk(path, recursive)], True
    if _GLOB_CHARS & set(item):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True))
        files = [p for p in matches if is_image_path(p) and _is_file(p)]
        if not files:
            raise UsageError(f"the pattern {item!r} matches no image files")
        return [(p, p.parent) for p in files], True
    if path.is_symlink():
        raise UsageError(f"input {item!r} is a symbolic link to {os.readlink(path)!r}, which does not exist")
    if os.path.lexists(path):
        raise UsageError(f"input {item!r} is not a regular file (a FIFO, socket or device?); give an image file")
    raise UsageError(f"input {item!r} does not exist")


def output_suffix(suffix: str | None, scale: float) -> str:
    """The text added to an input's stem: ``_x4`` by default; ``--suffix big`` gives ``_big``
    (the underscore added as Real-ESRGAN does, unless it starts with ``_`` or ``-``)."""
    if suffix is None:
        return f"_x{scale:g}"
    if "/" in suffix or os.sep in suffix or (os.altsep and os.altsep in suffix) or ".." in suffix or "\0" in suffix:
        raise UsageError(
            f"--suffix {suffix!r} must not hold a path separator or '..': it names files beside their input"
        )
    return suffix if not suffix or suffix[0] in "_-" else f"_{suffix}"


def _own_outputs(files: Sequence[Path], suffix: str) -> set[Path]:
    """The files among ``files`` that are this naming rule's outputs of another of them
    (``a_x4.png`` beside ``a.png``): a folder or pattern never takes them as inputs."""
    if not suffix:
        return set()
    stems = {(p.parent, p.stem) for p in files}
    return {p for p in files if p.stem.endswith(suffix) and (p.parent, p.stem[: -len(suffix)]) in stems}


def plan_jobs(inputs: Sequence[str], spec: OutputSpec, *, scale: int, recursive: bool = False) -> list[Job]:
    """Expand files, folders and globs into jobs; refuse any output that would overwrite an input.

    A folder or pattern never yields this naming rule's own outputs (``a_x4.png`` beside
    ``a.png``), so reruns in place neither refuse nor upscale them again.
    """
    if not inputs:
        raise UsageError("no input given: pass image files, folders or glob patterns")
    suffix = output_suffix(spec.suffix, scale)
    out_dir = _resolved(spec.output) if spec.output is not None else None
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        found, expanded = _expand_one(item, recursive)
        if expanded:
            earlier = _own_outputs([p for p, _ in found], suffix)
            if earlier:
                log.debug("%d earlier outputs (NAME%s beside NAME) not taken as inputs", len(earlier), suffix)
            inside = {p for p, _ in found if out_dir is not None and _resolved(p).is_relative_to(out_dir)}
            if inside:  # `spsr upscale p -r -o p/up`, run again: p/up holds the earlier outputs
                log.info("%d files in the output folder %s are not taken as inputs", len(inside), spec.output)
            found = [(p, root) for p, root in found if p not in earlier and p not in inside]
        pairs.extend(found)
    if not pairs:
        raise UsageError(f"no images found in {', '.join(inputs)} (use --recursive for sub-folders)")
    ext = "." + spec.ext.lower().lstrip(".") if spec.ext else None
    check_name_lengths(spec, suffix, ext)
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
        problem = name_problem(target)
        try:
            source.stat()
        except OSError as err:  # e.g. a folder on the way that may not be searched: this input fails alone
            problem = f"cannot read {source}: {err.strerror or err}"
        # only an input's own extension gets here (e.g. .gif)
        if problem is None and not is_writable_extension(target.suffix):
            animated = " (an animated image: its first frame)" if (count_frames(source) or 1) > 1 else ""
            problem = (
                f"{source.suffix.lower()} files cannot be written; pass --ext png (or jpg, webp, tif, bmp) to "
                f"upscale it{animated}"
                if is_image_path(source)
                else f"{source.name} is not a supported image type ({', '.join(SUPPORTED_EXTENSIONS)}, .gif)"
            )
        jobs.append(Job(source=source, target=target, problem=problem))
    sources = {_resolved(j.source) for j in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        resolved = _resolved(job.target)
        if resolved in sources:
            raise UsageError(
                f"output {job.target} would overwrite the input image {resolved}; choose another -o, --suffix or --ext"
            )
        if resolved in seen:
            raise UsageError(f"inputs {seen[resolved]} and {job.source} would both be written to {job.target}")
        seen[resolved] = job.source
    check_destinations([job for job in jobs if job.problem is None])
    return jobs


def name_problem(target: Path) -> str | None:
    """Why ``target``'s name cannot be created (longer than :data:`~spsr_cli.files.NAME_MAX` bytes), or None."""
    size = len(os.fsencode(target.name))
    if size <= NAME_MAX:
        return None
    return (
        f"the output name {target.name[:60]}... is {size} bytes, more than the {NAME_MAX} a file name may have; "
        "use a shorter --suffix, or -o FOLDER with shorter input names"
    )


def check_name_lengths(spec: OutputSpec, suffix: str, ext: str | None) -> None:
    """Refuse, as usage errors, an -o path with a component or a --suffix too long for any file name."""
    for part in spec.output.parts if spec.output is not None else ():
        if len(os.fsencode(part)) > NAME_MAX:
            raise UsageError(
                f"-o {str(spec.output)[:80]}...: the name {part[:40]}... is {len(os.fsencode(part))} bytes, more than "
                f"the {NAME_MAX} a file or folder name may have; choose a shorter -o"
            )
    if len(os.fsencode(suffix + (ext or ""))) >= NAME_MAX:
        raise UsageError(
            f"--suffix {suffix[:40]}... is {len(os.fsencode(suffix))} bytes: with the input's name it cannot fit in "
            f"the {NAME_MAX} bytes a file name may have; choose a shorter --suffix"
        )


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return Path(os.path.abspath(path))


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
        raise UsageError(
            f"-o {out}: {out.suffix!r} is not a format we write; use one of: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return True


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_destinations(jobs: Sequence[Job]) -> None:
    """Refuse, before any image is computed, outputs that cannot be written.

    Every output folder (or its nearest existing ancestor, where it is to be created)
    must be a writable folder, and no output may be an existing folder. Writability is
    probed by creating and removing a file (``os.access`` says yes to root everywhere,
    even in ``/proc``). Raises :class:`UsageError` naming the path and the fix.
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
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".spsr-probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise UsageError(
                f"cannot write into {folder}: {err.strerror or err}; choose another -o or fix its permissions"
            ) from None


def shard(jobs: list[Job], rank: int | None = None, world_size: int | None = None) -> list[Job]:
    """This process's share under torchrun (``RANK``/``WORLD_SIZE``), else all jobs."""
    rank = _env_int("RANK", 0) if rank is None else rank
    world_size = _env_int("WORLD_SIZE", 1) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"RANK={rank} / WORLD_SIZE={world_size} is not a valid process layout")
    return jobs[rank::world_size]


def _env_int(name: str, default: int) -> int:
    """A whole number from the environment (torchrun's RANK, WORLD_SIZE); a usage error naming it otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number; unset it or run under torchrun") from None


def run_jobs(
    jobs: Iterable[Job],
    model: Union[Generator, ModelChoice, Callable[[], Union[Generator, ModelChoice]]],
    options: InferenceOptions,
    *,
    outscale: float | None = None,
    quality: int = 95,
    skip_existing: bool = False,
    on_start: Callable[[Job], None] | None = None,
    on_tile: Progress | None = None,
    on_done: Callable[[Job, str | None], None] | None = None,
    on_report: Callable[[JobReport], None] | None = None,
    warm_up: bool = False,
) -> BatchResult:
    """Upscale every job; one bad file is recorded and the rest go on.

    ``model`` is a generator, a :class:`ModelChoice` (``--model auto`` picks each image's model, each
    loaded once), or a function returning either: it is called only when some job needs the
    network (a rerun with ``skip_existing`` over finished outputs loads nothing).
    ``on_done(job, problem)`` and ``on_report(report)`` are called per job, in job order.
    ``warm_up``: run one small tile through a model before its first image is timed (a ``ModelChoice``
    passed in decides this itself).
    Before an image is decoded, its size is read from the file's header and its memory
    checked, so a small file that decodes to a huge image fails alone without being decoded.
    """
    check_outscale(outscale)
    result = BatchResult()
    jobs = list(jobs)
    before = {id(job): _stamp(job.target) for job in jobs}
    for folder in {job.target.parent for job in jobs}:
        for stale in remove_stale_claims(folder):
            log.info("removed %s, left by an interrupted run", stale)

    def wanted(job: Job) -> bool:
        return job.problem is None and not (skip_existing and job.target.exists())

    if not any(wanted(job) for job in jobs):  # nothing to compute: no model, no torch
        for job in jobs:
            outcome = ("failed", job.problem) if job.problem is not None else ("skipped", SKIPPED)
            _book(result, job, outcome, {}, on_done, on_report)
        return result

    from spsr_cli.engine import pipeline
    from spsr_cli.engine.fast_start import fast_choice, remember_usual
    from spsr_cli.engine.model_choice import ModelChoice
    from spsr_cli.engine.pipeline import Prefetcher, WriteBehind
    from spsr_cli.engine.tiles import MemoryBudgetError

    choice = fast_choice(model, options, warm_up=warm_up)  # a model OpenVINO converted before: no torch
    if choice is None:
        torch = sys.modules.get("torch")  # a module given here means torch is loaded; the rest may not need it
        is_module = torch is not None and isinstance(model, torch.nn.Module)
        loaded = model if is_module or isinstance(model, ModelChoice) else model()
        choice = (
            loaded
            if isinstance(loaded, ModelChoice)
            else ModelChoice.of_module(
                loaded, options, hint_jpeg=bool(getattr(model, "is_default", False)), warm_up=warm_up
            )
        )
    result.settings = upscaler_settings(choice.first)
    result.one_off = choice.one_off
    log.debug("device %(device)s, precision %(precision)s, tile %(tile)s, backend %(backend)s", result.settings)
    details: dict[int, dict] = {}
    ran: set[tuple[str, Any]] = set()  # (backend, dtype) pairs that ran

    def record(job: Job, outcome: object) -> None:
        """Book one finished job, in job order: None written, an exception failed, (kind, message) as settled."""
        if isinstance(outcome, BaseException) and not isinstance(outcome, (SPSRError, OSError, MemoryError)):
            raise outcome
        if isinstance(outcome, BaseException):
            log.debug("failed on %s", job.source, exc_info=outcome)
            outcome = ("failed", str(outcome) or type(outcome).__name__)
        _book(result, job, outcome, details.pop(id(job), {}), on_done, on_report)

    def write(job: Job, out: Image, claim: object) -> None:
        with claim:  # type: ignore[attr-defined]
            job.target.parent.mkdir(parents=True, exist_ok=True)
            write_image(job.target, out, quality=quality)
        info = details.get(id(job))
        if info is not None:
            info["seconds"] = time.perf_counter() - info.pop("t0")

    def load(job: Job) -> Image | None:
        """Decode ahead on the worker thread, unless the image is large: the main thread checks its memory first."""
        if not wanted(job) or options.memory_limit is not None:  # --max-memory: decode after the check
            return None
        height, width = image_size(job.source)  # the header only
        return read_image(job.source) if height * width * DECODE_BYTES_PER_PIXEL <= PREFETCH_MAX_BYTES else None

    def decode_checked(job: Job, writer: WriteBehind, upscaler: Upscaler) -> Image:
        """Check, from the header's size, that the image fits before decoding it."""
        height, width = image_size(job.source)
        extra = height * width * DECODE_BYTES_PER_PIXEL
        try:
            upscaler.plan(height, width, extra_bytes=extra)
        except MemoryBudgetError:
            if not writer.make_room():
                raise
            upscaler.plan(height, width, extra_bytes=extra)
        return read_image(job.source)

    def work(decoded: Prefetcher, writer: WriteBehind) -> None:
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
            if claim is None or _stamp(job.target) != before[id(job)]:
                reason = (
                    f"{SKIPPED}: another process (pid {holder(job.target)}) is writing {job.target}"
                    if claim is None
                    else f"{SKIPPED}: another process wrote {job.target} during this run"
                )
                if claim is not None:
                    claim.release()
                writer.settle(job, ("busy", reason))
                continue
            if on_start:
                on_start(job)
            info: dict = {"t0": time.perf_counter()}
            details[id(job)] = info

            def count_tiles(done: int, total: int, info: dict = info) -> None:
                info["tiles"] = total
                if on_tile:
                    on_tile(done, total)

            try:
                if read_error is not None:
                    raise read_error
                upscaler = choice.upscaler_for(job.source)
                info["t0"] = time.perf_counter()  # loading a model for this image is a one-off cost
                info["model"] = choice.last
                image = image if image is not None else decode_checked(job, writer, upscaler)
                info["input_size"] = image.size[::-1]
                out = pipeline.upscale_image(
                    image, upscaler, outscale=outscale, progress=count_tiles, make_room=writer.make_room
                )
                info["output_size"] = out.size[::-1]
                info["backend"] = upscaler.backend.name
                ran.add((upscaler.backend.name, upscaler.backend.dtype))
            except (SPSRError, OSError, MemoryError) as err:
                claim.release()
                info["seconds"] = time.perf_counter() - info.pop("t0")
                writer.settle(job, err)
                continue
            except BaseException:
                claim.release()
                raise
            del image
            writer.submit(job, lambda job=job, out=out, claim=claim: write(job, out, claim))
            del out

    # The next image is decoded and the previous one written on worker threads (one each).
    with Prefetcher(jobs, load) as decoded, WriteBehind() as writer:
        try:
            work(decoded, writer)
        except KeyboardInterrupt:  # book what was finished (the write in flight completes), then stop
            for finished in writer.drain():
                record(*finished)
            raise
        for finished in writer.drain():
            record(*finished)
    if ran:  # what ran, not the choice (--backend auto: torch for a few small images, then OpenVINO)
        result.settings.update(ran_settings(ran))
    # The next run of a file the usual path ran through OpenVINO starts without torch (its card).
    remember_usual([(model, choice.first)] if isinstance(model, ModelLoader) else getattr(choice.load, "usual", []))
    return result


#: Bytes per input pixel that decoding takes: Pillow's 8-bit RGB(A) copy and our float32 planes.
DECODE_BYTES_PER_PIXEL = 16
#: Images whose decoding takes more than this are decoded only after their memory check, not ahead.
PREFETCH_MAX_BYTES = 256 << 20


def check_outscale(outscale: float | None) -> None:
    """Refuse an ``--outscale`` that is not a finite positive number (a usage error)."""
    if outscale is not None and not (math.isfinite(outscale) and outscale > 0):
        raise UsageError(f"--outscale must be a finite positive factor such as 2 or 3.5, got {outscale}")


def ran_settings(ran: set[tuple[str, Any]]) -> dict:
    """``backend`` and ``precision`` of a run from the (backend name, dtype) pairs that ran: each
    comma-separated when several did (``torch, openvino``)."""
    from spsr_cli.engine.records import precision_name

    return {
        "backend": ", ".join(sorted({name for name, _ in ran})),
        "precision": ", ".join(sorted({precision_name(dtype) for _, dtype in ran})),
    }


def upscaler_settings(upscaler: Upscaler) -> dict:
    """``device``, ``precision`` (fp32/fp16/bf16), ``tile`` (None: whole image), ``tile_overlap`` and
    ``backend`` an upscaler runs with (:func:`spsr_cli.engine.records.run_settings`)."""
    from spsr_cli.engine.records import run_settings

    return run_settings(upscaler)


def _book(
    result: BatchResult,
    job: Job,
    outcome: object,
    info: dict,
    on_done: Callable[[Job, str | None], None] | None,
    on_report: Callable[[JobReport], None] | None,
) -> None:
    """Record one job's outcome: None written, (kind, message) failed, skipped or busy."""
    status, reason = "written", None
    if outcome is None:
        result.done.append(job)
    else:
        kind, reason = outcome  # type: ignore[misc]
        if kind == "failed":
            status = "failed"
            result.failed.append((job, reason))
        else:
            status = "skipped"
            result.skipped.append(job)
            if kind == "busy":
                result.busy.append(job)
    report = JobReport(
        source=job.source,
        target=job.target,
        status=status,
        reason=reason,
        seconds=info.get("seconds"),
        input_size=info.get("input_size"),
        output_size=info.get("output_size"),
        tiles=info.get("tiles"),
        backend=info.get("backend"),
        model=info.get("model"),
    )
    result.reports.append(report)
    if on_done:
        on_done(job, None if outcome is None else f"failed: {reason}" if status == "failed" else reason)
    if on_report:
        on_report(report)


#: ``on_done``'s message for a job left alone: an existing output, or one another process writes.
SKIPPED = "skipped"


def _stamp(target: Path) -> tuple[int, int, int] | None:
    """``target``'s (inode, size, mtime in ns), or None when it does not exist: an output whose stamp
    changed since the run began was written by another process (one newer than the run's start, or
    dated in the future, was not)."""
    try:
        stat = target.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
