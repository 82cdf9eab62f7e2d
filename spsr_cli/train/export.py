"""``spsr train export``: a run's EMA generator -> float16 safetensors + local manifest entry.

NSE runs (``spsr train nse``) export their structure extractor instead: float32
safetensors and an ``auxiliary`` entry of the local manifest (see :func:`spsr_cli.train.nse.export_nse`).

The file is written with :func:`spsr_cli.weights.store.write_generator_file` (strictly
checked, atomic, config and provenance in the metadata) under ``$SPSR_HOME/weights``
and registered in ``$SPSR_HOME/weights_manifest.json``, so ``spsr upscale --model NAME``,
``spsr eval`` and :func:`spsr_cli.load_generator` find it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from spsr_cli.errors import NameTakenError
from spsr_cli.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from spsr_cli.train.config import TrainConfig

DEFAULT_LICENCE = "unspecified: trained locally with spsr train (check the licences of the data and --init weights)"


@dataclass(frozen=True)
class ExportResult:
    """Where the exported generator went."""

    name: str
    path: Path
    sha256: str
    step: int
    weights: str  # "ema" or "model"
    entry: Any


def resolve_checkpoint(run: Union[str, Path]) -> Path:
    """A run folder (its newest checkpoint) or a checkpoint file."""
    run = Path(run)
    if run.is_dir():
        latest = latest_checkpoint(run)
        if latest is None:
            raise CheckpointError(f"{run} holds no checkpoint yet (checkpoints/step_*.pt); train longer or pass a checkpoint file")
        return latest
    if run.is_file():
        return run
    raise CheckpointError(f"{run} is neither a run folder nor a checkpoint file")


def export_run(
    run: Union[str, Path],
    *,
    name: str,
    use_ema: bool = True,
    licence: Union[str, None] = None,
    description: str = "",
    replace: bool = False,
    dtype: torch.dtype = torch.float16,
) -> ExportResult:
    """Export a run's generator under ``name`` (see the module docstring).

    Args:
        run: run folder (newest checkpoint) or a checkpoint file.
        use_ema: export the EMA weights (default) or the raw generator.
        licence: recorded in the file and the manifest entry.
        replace: overwrite an existing local model of the same name.
    """
    from spsr_cli.weights.manifest import load_manifest, spsr_home, validate_name
    from spsr_cli.weights.store import register_local_model, write_generator_file

    validate_name(name)
    existing = load_manifest().models.get(name)
    if existing is not None and (existing.origin == "packaged" or not replace):
        raise NameTakenError(
            f"a model named {name!r} exists already; choose another --name"
            + ("" if existing.origin == "packaged" else " or pass --force")
        )
    path = resolve_checkpoint(run)
    state = load_checkpoint(path)
    if state.get("kind") == "nse":  # an `spsr train nse` run: float32 structure extractor, auxiliary entry
        from spsr_cli.train.nse import export_nse

        nse = export_nse(path, state, name=name, licence=licence, description=description, replace=replace)
        return ExportResult(name=name, path=nse.path, sha256=nse.sha256, step=nse.step, weights="nse", entry=nse)
    cfg = TrainConfig.from_dict(state["config"])
    key = "ema" if use_ema else "model"
    step = int(state["step"])
    init = (state.get("init_report") or {}).get("source")
    source = f"spsr train: {path.resolve()} (step {step}, {key} weights, stage {state.get('stage')})"
    licence = licence or DEFAULT_LICENCE
    target = spsr_home() / "weights" / f"{name}.safetensors"
    extra = {
        "training_step": str(step), "training_stage": str(state.get("stage")), "weights": key,
        "perceptual": str(state.get("perceptual")), "init": str(init),
    }
    sha = write_generator_file(target, state[key], cfg.spsr_config(), source=source, licence=licence, dtype=dtype,
                               extra_metadata=extra)
    entry = register_local_model(name, target, source=source, licence=licence, description=description, replace=True)
    return ExportResult(name=name, path=target, sha256=sha, step=step, weights=key, entry=entry)
