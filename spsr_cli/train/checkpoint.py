"""Atomic training checkpoints and RNG-state capture.

A checkpoint is one ``torch.save`` file ``RUN/checkpoints/step_XXXXXXXX.pt`` holding
the generator, its EMA copy, both discriminators, the optimisers and schedulers, the
step, every RNG state and the resolved config. It is written to a temporary file in
the same folder, flushed to disk and renamed (:func:`spsr_cli.files.atomic_path`), so a
run killed at any moment leaves either the old set of checkpoints or the new one, never
a half-written file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from spsr_cli import files
from spsr_cli.errors import SPSRError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})\.pt$")
#: The temporary names a checkpoint is written under: ``.NAME.XXXXXXXX.tmp`` (:func:`atomic_torch_save`)
#: and ``.NAME.PID.tmp`` (earlier versions).
_TEMPORARY = re.compile(r"^\.step_\d{8,}\.pt\.[a-z0-9_]{8}\.tmp$")
_TEMPORARY_PID = re.compile(r"^\.step_\d{8,}\.pt\.(\d+)\.tmp$")


class CheckpointError(SPSRError):
    """A training checkpoint is missing, unreadable or from an incompatible run."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Union[str, Path]) -> list[tuple[int, Path]]:
    """(step, path) of the run's checkpoints, oldest first (temporary files ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Union[str, Path]) -> Union[Path, None]:
    """The newest checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (when present) CUDA RNG states (tensors and plain
    Python values only, so checkpoints load with ``torch.load(weights_only=True)``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through :func:`spsr_cli.files.atomic_path` (durable: the file
    and its folder are fsynced before and after the rename).

    The temporary stays ``flock``-ed while it is written, so :func:`remove_stale_temporaries`
    tells a killed writer's temporary (unlocked) from a running one's.
    """
    try:
        with files.atomic_path(path, durable=True) as tmp:
            with open(tmp, "wb") as handle:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                torch.save(obj, handle)
                handle.flush()
                os.fsync(handle.fileno())  # while locked; atomic_path's own fsync then has nothing left to write
    except (OSError, RuntimeError) as err:  # a full disk: ENOSPC, or torch's "[enforce fail ...] unexpected pos"
        raise CheckpointError(_write_failure(path, err)) from None


def _write_failure(path: Path, err: BaseException) -> str:
    """Why a checkpoint could not be written, in words, with the free space and the fix."""
    import shutil

    reason = err.strerror if isinstance(err, OSError) and err.strerror else "the write stopped short"
    try:
        free = f"{shutil.disk_usage(files.nearest_existing(path.parent)).free / 1e6:.0f} MB are free there"
    except OSError:
        free = "its free space is unknown"
    return (
        f"cannot write the checkpoint {path}: {reason} (a full disk or a file size limit?); {free}. Nothing "
        "half-written was kept: free some space and continue with --resume (the newest whole checkpoint is kept)"
    )


def _locked(path: Path) -> bool:
    """True when another open file holds a ``flock`` on ``path`` (a writer at work)."""
    if fcntl is None:  # pragma: no cover - Windows: assume a writer, keep the file
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # gone (renamed into place) or unreadable: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover - e.g. a platform without signals: assume alive, keep the file
        return True
    return True


def remove_stale_temporaries(run_dir: Union[str, Path]) -> list[Path]:
    """Delete checkpoint temporaries left by a killed run: ``checkpoints/.step_*.pt.XXXXXXXX.tmp``
    that no writer holds locked, and ``.step_*.pt.PID.tmp`` (earlier versions) whose process is gone.

    Only files of exactly these namings are touched, and never one a running process writes.
    Returns the deleted paths.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        by_pid = _TEMPORARY_PID.match(path.name)
        if not (by_pid or _TEMPORARY.match(path.name)) or not path.is_file() or _locked(path):
            continue
        if by_pid and (int(by_pid.group(1)) == os.getpid() or _process_alive(int(by_pid.group(1)))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def save_checkpoint(run_dir: Union[str, Path], step: int, state: dict[str, Any], *, keep: int = 0) -> Path:
    """Write ``state`` (plus step and format version) as the checkpoint of ``step``.

    Stale temporaries of killed runs are removed first (:func:`remove_stale_temporaries`).
    ``keep`` > 0 deletes all but the newest ``keep`` checkpoints afterwards.
    """
    remove_stale_temporaries(run_dir)
    path = checkpoint_path(Path(run_dir), step)
    atomic_torch_save({"format_version": FORMAT_VERSION, "step": step, **state}, path)
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many unrelated types for damaged/foreign files
        from spsr_cli.weights.store import torch_load_refusal

        raise CheckpointError(
            f"checkpoint {path} could not be read: {torch_load_refusal(path, exc)}; "
            "delete it to fall back to an older one"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or "step" not in state:
        raise CheckpointError(f"{path} is not a spsr training checkpoint (format {FORMAT_VERSION})")
    return state


def _read_tensor_file(path: Path) -> object:
    """The contents of an init weights file, read by the weights package (the one reader of weight files)."""
    from spsr_cli.errors import CheckpointMismatchError, UnknownModelError
    from spsr_cli.weights.store import read_tensor_file

    try:
        return read_tensor_file(path)[0]
    except (CheckpointMismatchError, UnknownModelError) as err:
        raise CheckpointError(
            f"{err}; pass a .safetensors/.pth state dict, a training checkpoint or a run folder"
        ) from None


def initialise_generator(model: torch.nn.Module, source: Union[str, Path]) -> dict[str, Any]:
    """Load starting weights into a fresh :class:`SPSRNet` (``--init``).

    ``source`` may be a training run folder or checkpoint (its EMA generator), an SPSR
    generator file (canonical or published layout, loaded strictly), or a pretrained
    RRDBNet in the ESRGAN or BasicSR/Real-ESRGAN layout, embedded exactly (the
    generator's ``sr`` equals the RRDBNet's output; see :func:`embed_rrdbnet`).

    Returns a JSON-friendly report: ``kind``, ``source``, ``loaded`` / ``random``
    (and for RRDBNets ``constructed``) key lists.
    """
    from spsr_cli.weights.layouts import canonicalize_state_dict, check_state_dict, unwrap_state_dict

    path = Path(source)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"--init {path}: the folder holds no training checkpoint ({CHECKPOINT_DIR}/step_*.pt)"
            )
        path = latest
    if not path.is_file():
        raise CheckpointError(f"--init {path}: no such file or run folder")
    raw: Any = None
    kind = None
    if path.suffix.lower() == ".pt":
        try:
            raw = load_checkpoint(path)["ema"]
            kind = "training-checkpoint"
        except CheckpointError:
            raw = None
    if raw is None:
        raw = _read_tensor_file(path)
    sd = unwrap_state_dict(raw)
    try:
        canonical, _ = canonicalize_state_dict(sd)
        check_state_dict(model, canonical)
    except SPSRError:
        if kind is not None:
            raise
        canonical = None
    if canonical is not None:
        model.load_state_dict({k: v.float() for k, v in canonical.items()}, strict=True)
        return {
            "kind": kind or "spsr-generator",
            "source": str(path),
            "loaded": sorted(canonical),
            "random": [],
            "ignored": [],
        }
    from spsr_cli.train.pretrained import embed_rrdbnet

    report = embed_rrdbnet(model, sd)
    return {
        "kind": "rrdb-warm-start",
        "source": str(path),
        "loaded": list(report.loaded),
        "constructed": list(report.constructed),
        "random": list(report.random),
    }
