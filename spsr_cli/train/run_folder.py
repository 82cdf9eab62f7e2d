"""The run folder and the run rules both training loops share.

The generator's loop (:mod:`spsr_cli.train.loop`) and the NSE's (:mod:`spsr_cli.train.nse_loop`)
write the same layout::

    RUN/config.yaml     the resolved config, written atomically (:func:`spsr_cli.train.config.write_config`)
    RUN/log.jsonl       one JSON object per line, each stamped with ``time`` (:class:`RunLog`)
    RUN/checkpoints/    step_XXXXXXXX.pt, atomic (:func:`spsr_cli.train.checkpoint.save_checkpoint`)

and follow the same rules: a fresh run refuses a folder that already holds checkpoints; a
resumed run continues from the newest one once the loop's own check accepts it
(:func:`resume_state`); the thread count a run sets is restored when it ends, on error too
(:func:`torch_threads`); a non-finite loss stops it with :class:`TrainingDivergedError`
(:func:`check_finite`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union

import torch

from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.files import write_text_atomic
from spsr_cli.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, remove_stale_temporaries
from spsr_cli.train.config import write_config

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.yaml"


class TrainingDivergedError(SPSRError):
    """A loss became NaN or infinite."""


def resume_state(
    run_dir: Path, *, resume: bool, check: Callable[[dict[str, Any], Path], None], announce: bool = True
) -> Union[dict[str, Any], None]:
    """The checkpoint state a run starts from, or None for step 0.

    ``resume=False``: refuses (:class:`UsageError`) a folder that already holds checkpoints, so a
    fresh run never overwrites one. ``resume=True``: the newest checkpoint, after ``check(state, path)``
    (which raises when the checkpoint belongs to another kind of run); None when there is none yet
    (logged when ``announce``).
    """
    if not resume:
        if list_checkpoints(run_dir):
            raise UsageError(
                f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out"
            )
        return None
    latest = latest_checkpoint(run_dir)
    if latest is None:
        if announce:
            log.info("no checkpoint in %s yet; starting from step 0", run_dir)
        return None
    state = load_checkpoint(latest)
    check(state, latest)
    return state


class RunLog:
    """``RUN/log.jsonl``, opened for appending: :meth:`write` adds one row (a JSON object with
    ``time`` first) and flushes. ``RunLog(None)`` writes nothing (ranks other than 0)."""

    def __init__(self, path: Union[Path, None]) -> None:
        self._file = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, row: Mapping[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"time": time.time(), **row}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_run_folder(run_dir: Path, cfg: Any, *, resumed_step: Union[int, None] = None) -> RunLog:
    """Create ``run_dir``, remove checkpoint temporaries a killed run left, write ``config.yaml``
    (``cfg``: a config with ``to_dict()``) and open ``log.jsonl``.

    ``resumed_step``: the checkpoint's step when the run continues; rows a stopped run logged after
    it (steps that will now be trained again) are dropped first (:func:`drop_rows_after`), so each
    step appears once in ``log.jsonl``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(run_dir):
        log.info("removed %s, left by a killed run", stale.name)
    write_config(cfg, run_dir / CONFIG_FILE)
    if resumed_step is not None:
        dropped = drop_rows_after(run_dir / LOG_FILE, resumed_step)
        if dropped:
            log.info("dropped %d log rows after step %d (they are trained again)", dropped, resumed_step)
    return RunLog(run_dir / LOG_FILE)


def drop_rows_after(path: Path, step: int) -> int:
    """Rewrite the log ``path`` (atomically) without its rows whose ``step`` is greater than ``step``;
    rows without a step, and lines that are not JSON (a torn last line), are kept as they are.
    Returns how many rows were dropped (0: the file is left untouched)."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step:
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        write_text_atomic(path, "".join(kept))
    return dropped


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (``threads`` <= 0: unchanged); the
    previous count is restored afterwards, also when the block raises."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_finite(values: Mapping[str, float], step: int, hint: str) -> None:
    """Raise :class:`TrainingDivergedError` (naming the step, the values and ``hint``, the fix) when a
    value is NaN or infinite."""
    if not all(math.isfinite(v) for v in values.values()):
        raise TrainingDivergedError(f"non-finite loss at step {step}: {dict(values)}; {hint}")


__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "RunLog",
    "TrainingDivergedError",
    "check_finite",
    "open_run_folder",
    "resume_state",
    "torch_threads",
]
