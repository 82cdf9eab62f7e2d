"""What a ``--json`` record says about a model and how it ran, so that a run can be reproduced.

Every record (``spsr upscale``, ``spsr eval``, ``spsr compare``) names, per model: its name,
registry version, sha256, architecture and config (:func:`describe_model`); the device,
precision, tile and backend it ran with (:func:`run_settings`); and the software versions
(:func:`software_versions`). Times of images and videos exclude one-off costs: loading a model and
its warm-up (:func:`warm_up`: library start-up, memory allocation and a first conversion are paid
before any image or frame is timed) are recorded on their own.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a record is made
    from torch import nn

    from spsr_cli.engine.batch import BatchResult, JobReport
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.engine.video import VideoReport, VideoResult

#: The backend named for an upscaler that has none (PyTorch eager).
BACKEND = "torch"
#: Edge in input pixels of the one tile :func:`warm_up` runs (smaller when the tile is).
WARM_UP_SIDE = 64


def software_versions() -> dict[str, str]:
    """The versions that decide a run's numbers: spsr-cli, Python, torch, NumPy, Pillow, and the platform."""
    import numpy as np
    import PIL
    import torch

    from spsr_cli import __version__

    return {
        "spsr-cli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(terse=True),
    }


def describe_model(source: str | Path | None, module: nn.Module | None = None) -> dict[str, Any]:
    """Who a model is: ``name`` (the registry name, or the path as given), ``version`` (a registry model's;
    None otherwise), ``path``, ``sha256``, ``architecture`` and ``config``.

    ``source`` None names the registry's default model. A registry model's sha256 is its pin (its file is
    checked against it whenever it is loaded); a path's is computed. ``module``: the loaded network, whose
    config is taken for a file the registry does not know.
    """
    from spsr_cli.files import sha256_file
    from spsr_cli.weights.local import cached_model_file
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    name = manifest.default if source is None else str(source)
    entry = manifest.models.get(name) if name is not None else None
    if entry is not None:
        path = cached_model_file(entry)
        return {
            "name": entry.name,
            "version": entry.version or None,
            "path": str(path) if path is not None else None,
            "sha256": entry.sha256,
            "architecture": entry.architecture,
            "config": entry.config.to_dict(),
            "origin": entry.origin,
        }
    config = getattr(module, "config", None)
    path = Path(str(name)).expanduser()
    return {
        "name": str(name),
        "version": None,
        "path": str(path.resolve()) if path.is_file() else None,
        "sha256": sha256_file(path) if path.is_file() else None,
        "architecture": getattr(config, "architecture", None),
        "config": config.to_dict() if config is not None else None,
        "origin": "file",
    }


def precision_name(dtype: Any) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for a torch dtype or its name (``torch.bfloat16``, ``bfloat16``)."""
    name = str(dtype).removeprefix("torch.")
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(name, name)


def run_settings(upscaler: Upscaler) -> dict[str, Any]:
    """``device``, ``precision`` (fp32/fp16/bf16), ``tile`` (None: whole image), ``tile_overlap`` and
    ``backend`` an upscaler runs with: ``torch`` or ``openvino``, or ``auto`` while the choice is made per
    image (``--backend auto`` before any image ran; each image's report names the backend that ran it)."""
    return {
        "device": str(upscaler.device),
        "precision": precision_name(upscaler.dtype),
        "tile": upscaler.tile,
        "tile_overlap": upscaler.overlap,
        "backend": getattr(upscaler, "backend_choice", BACKEND),
    }


def warm_up(upscaler: Upscaler) -> float:
    """Pay ``upscaler``'s one-off costs (library start-up, kernel selection, memory pools; OpenVINO's
    start and a first conversion) so that they are not counted in the first image's time; returns its
    seconds. Torch runs one small random tile (at most :data:`WARM_UP_SIDE` pixels a side); OpenVINO
    compiles nothing (each image's patch shapes are compiled, or loaded from the cache, with it)."""
    side = min(upscaler.tile or WARM_UP_SIDE, WARM_UP_SIDE)
    started = time.perf_counter()
    upscaler.warm_up(side)
    return time.perf_counter() - started


def upscale_record(
    result: BatchResult | None,
    *,
    requested: str | None,
    module: nn.Module | None,
    auto: bool,
    load_seconds: float | None,
    videos: VideoResult | None = None,
) -> dict[str, Any]:
    """The model part of ``spsr upscale --json``: ``model`` (what was asked for: the model's description, or
    ``auto`` and its rule), ``models`` (each model that ran: description, ``load_seconds``,
    ``warm_up_seconds``), how they ran (``device``, ``precision``, ``tile``, ``tile_overlap``, ``backend``),
    ``versions``, ``images`` (each report; under ``auto`` its ``model`` names the name, version, sha256
    and reason of that image's model) and, when ``videos`` ran, ``videos`` (each video's report, its
    ``model`` under ``auto`` as for an image).

    ``result`` None: no image was in the run. Images and videos each build their upscaler (and warm it
    up); a model used by both is described once, with the costs of its first build (the images').
    """
    from spsr_cli.engine.model_choice import AUTO, JPEG_MODEL, JPEG_QUALITY_THRESHOLD

    runs = [r for r in (result, videos) if r is not None]
    one_off: dict[str | None, dict[str, Any]] = {}
    for run in runs:  # the images' costs are kept: they ran first
        for name, costs in run.one_off.items():
            one_off.setdefault(name, costs)
    models: list[dict[str, Any]] = []
    if auto:
        asked: dict[str, Any] = {
            "name": AUTO,
            "rule": f"JPEGs of estimated quality below {JPEG_QUALITY_THRESHOLD} go to {JPEG_MODEL}, "
            "every other image (and every video) to the default model",
        }
        for name, costs in one_off.items():
            models.append({**describe_model(name), **costs})
    else:
        asked = describe_model(requested, module)
        if one_off:
            costs = dict(next(iter(one_off.values())))
            costs["load_seconds"] = load_seconds  # the module was loaded before the batch
            models.append({**asked, **costs})
    by_name = {m["name"]: m for m in models}

    def row(report: JobReport | VideoReport) -> dict[str, Any]:
        entry = report.to_json()
        chosen = by_name.get((report.model or {}).get("model"))
        if report.model is not None and chosen is not None:
            entry["model"] = {
                "name": chosen["name"],
                "version": chosen["version"],
                "sha256": chosen["sha256"],
                "reason": report.model.get("reason"),
            }
        return entry

    ran = next((r.settings for r in runs if r.settings), {})
    settings = {k: ran.get(k) for k in ("device", "precision", "tile", "tile_overlap", "backend")}
    record: dict[str, Any] = {
        "model": asked,
        "models": models,
        **settings,
        "versions": software_versions(),
        "images": [row(r) for r in result.reports] if result is not None else [],
    }
    if videos is not None:
        record["videos"] = [row(r) for r in videos.reports]
    return record


def per_megapixel(seconds: float | None, output_pixels: int) -> float | None:
    """Seconds per megapixel of output (None when there is nothing to divide)."""
    return None if seconds is None or output_pixels <= 0 else seconds / (output_pixels / 1e6)


__all__ = [
    "precision_name",
    "BACKEND",
    "WARM_UP_SIDE",
    "describe_model",
    "per_megapixel",
    "run_settings",
    "software_versions",
    "upscale_record",
    "warm_up",
]
