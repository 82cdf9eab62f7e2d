"""``spsr train export``: a run's EMA generator -> float16 safetensors + local manifest entry.

NSE runs (``spsr train nse``) export their structure extractor instead: float32
safetensors and an ``auxiliary`` entry of the local manifest (see :func:`export_nse`).

The file is written with :func:`spsr_cli.weights.store.write_generator_file` (strictly
checked, atomic, config and provenance in the metadata) under ``$SPSR_HOME/weights``
and registered in ``$SPSR_HOME/weights_manifest.json``, so ``spsr upscale --model NAME``,
``spsr eval`` and :func:`spsr_cli.load_generator` find it by name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from spsr_cli.errors import NameTakenError
from spsr_cli.model.nse import NSENet
from spsr_cli.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from spsr_cli.train.config import TrainConfig
from spsr_cli.train.nse_config import NSE_CHECKPOINT_KIND, NSETrainConfig

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
            raise CheckpointError(
                f"{run} holds no checkpoint yet (checkpoints/step_*.pt); train longer or pass a checkpoint file"
            )
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
    if state.get("kind") == NSE_CHECKPOINT_KIND:  # an `spsr train nse` run: float32 NSE, auxiliary entry
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
        "training_step": str(step),
        "training_stage": str(state.get("stage")),
        "weights": key,
        "perceptual": str(state.get("perceptual")),
        "init": str(init),
    }
    sha = write_generator_file(
        target, state[key], cfg.spsr_config(), source=source, licence=licence, dtype=dtype, extra_metadata=extra
    )
    entry = register_local_model(name, target, source=source, licence=licence, description=description, replace=True)
    return ExportResult(name=name, path=target, sha256=sha, step=step, weights=key, entry=entry)


# ---------------------------------------------------------------- NSE runs


@dataclass(frozen=True)
class NSEExport:
    """Where an exported structure extractor went (``metadata``: what its safetensors file records)."""

    name: str
    path: Path
    sha256: str
    size: int
    step: int
    metadata: dict[str, str]


def nse_from_checkpoint(state: dict[str, Any]) -> tuple[NSENet, NSETrainConfig]:
    """The NSE (in eval mode) and the config of an NSE run's checkpoint state."""
    cfg = NSETrainConfig.from_dict(state["config"])
    model = NSENet(cfg.model)
    model.load_state_dict(state["model"], strict=True)
    return model.eval(), cfg


def write_nse_from_checkpoint(state: dict[str, Any], path: Path, *, source: str, licence: str) -> NSEExport:
    """Write a checkpoint's NSE as float32 safetensors (config, task, evaluation in the metadata)."""
    from spsr_cli.weights.nse_files import write_nse_file

    model, cfg = nse_from_checkpoint(state)
    meta = {
        "method": cfg.task.method,
        "training_step": str(int(state["step"])),
        "training_seconds": f"{float(state.get('train_seconds', 0.0)):.1f}",
        "evaluation": json.dumps(state.get("evaluation")),
        "training_config": json.dumps(cfg.to_dict()),
        "source": source,
        "licence": licence,
    }
    sha = write_nse_file(path, model, metadata=meta)
    return NSEExport(
        name=path.stem, path=path, sha256=sha, size=path.stat().st_size, step=int(state["step"]), metadata=meta
    )


def export_nse(
    checkpoint: Path,
    state: dict[str, Any],
    *,
    name: str,
    licence: Union[str, None] = None,
    description: str = "",
    replace: bool = False,
) -> NSEExport:
    """``spsr train export`` of an NSE run: float32 safetensors under ``$SPSR_HOME/weights`` and an
    entry in the local registry's ``auxiliary`` list, so ``loss.nse: NAME`` finds it."""
    from spsr_cli.files import write_json_atomic
    from spsr_cli.weights.manifest import (
        FORMAT_VERSION,
        load_manifest,
        local_manifest_path,
        read_manifest_file,
        spsr_home,
        validate_name,
    )
    from spsr_cli.weights.nse_files import AUX_KIND
    from spsr_cli.weights.nse_files import nse_entries as _auxiliary_entries

    validate_name(name)
    packaged = load_manifest().auxiliary
    if name in packaged or (name in _auxiliary_entries() and not replace):
        raise NameTakenError(
            f"a structure extractor named {name!r} exists already; choose another --name"
            + ("" if name in packaged else " or pass --force")
        )
    licence = licence or "unspecified: trained locally with spsr train nse (check the licences of the data)"
    target = spsr_home() / "weights" / f"{name}.safetensors"
    source = f"spsr train nse: {checkpoint.resolve()} (step {int(state['step'])})"
    out = write_nse_from_checkpoint(state, target, source=source, licence=licence)
    path = local_manifest_path()
    data = (
        read_manifest_file(path)
        if path.is_file()
        else {"format_version": FORMAT_VERSION, "default": None, "models": []}
    )
    aux = [a for a in data.get("auxiliary", []) if a.get("name") != name]
    aux.append(
        {
            "name": name,
            "kind": AUX_KIND,
            "description": description,
            "licence": licence,
            "provenance": source,
            "method": out.metadata["method"],
            "evaluation": state.get("evaluation"),
            "size": out.size,
            "source": {"type": "file", "path": str(target.resolve()), "sha256": out.sha256},
        }
    )
    data["auxiliary"] = aux
    write_json_atomic(path, data)
    return dataclasses.replace(out, name=name)
