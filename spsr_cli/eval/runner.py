"""``evaluate(...)`` / ``evaluate_many(...)``: super-resolve a benchmark set and measure
PSNR / SSIM / LPIPS (full-reference) and NIQE (no-reference).

The SR output is quantised to uint8 (``round(255 x)``) before any metric, as the
papers' MATLAB toolboxes do. ``model="bicubic"`` is the tables' baseline row:
MATLAB-style bicubic upscaling of the LR. Several models are scored in one pass over the
images (each pair is read once), which also makes side-by-side crops possible.
An image that cannot be read or paired is reported as a failed row; the others are still scored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.records import describe_model, per_megapixel, run_settings, software_versions, warm_up
from spsr_cli.errors import ImageError, SPSRError, UsageError
from spsr_cli.eval.datasets import DatasetSource, ImagePair, load_pair, pair_files, to_uint8
from spsr_cli.eval.degradation import Degradation
from spsr_cli.eval.lpips import LPIPS, MIN_SIZE, image_to_lpips_input, load_lpips
from spsr_cli.eval.metrics import Protocol, get_protocol, psnr_ssim
from spsr_cli.eval.niqe import BLOCK as NIQE_BLOCK
from spsr_cli.eval.niqe import niqe_of_image
from spsr_cli.files import write_text_atomic
from spsr_cli.io.images import Image as SpsrImage
from spsr_cli.io.images import write_image
from spsr_cli.io.imresize import bicubic_upscale
from spsr_cli.weights.niqe import NIQEError, NIQEModel, load_niqe_model

log = logging.getLogger(__name__)

BICUBIC = "bicubic"
#: called after each image with (images done, images total, image name)
Progress = Callable[[int, int, str], None]
Upscale = Callable[[np.ndarray], np.ndarray]
METRICS = ("psnr", "ssim", "lpips", "niqe")


@dataclass(frozen=True)
class ImageResult:
    """One image's scores; ``error`` (and no scores) when it could not be evaluated. ``seconds``: the
    model's time on it (upscaling only: no metrics, no one-off costs)."""

    name: str
    psnr: float | None
    ssim: float | None
    lpips: float | None
    niqe: float | None = None
    error: str | None = None
    seconds: float | None = None
    output_pixels: int = 0


@dataclass
class PreparedModel:
    """A model ready to score: its uint8 LR -> uint8 SR function, scale, and ``record`` (who it is:
    :func:`~spsr_cli.engine.records.describe_model`; how it runs: device, precision, tile, backend; and its
    one-off ``load_seconds`` and ``warm_up_seconds``)."""

    upscale: Upscale
    scale: int
    record: dict[str, Any]


@dataclass
class EvalResult:
    """Everything ``spsr eval`` reports for one model; ``to_dict()`` is the ``--json`` document."""

    protocol: str
    model: str
    dataset: dict[str, Any]
    scale: int
    images: list[ImageResult] = field(default_factory=list)
    lpips_note: str | None = None  # why LPIPS is missing, if it is
    niqe_note: str | None = None  # why NIQE is missing, if it is
    seconds: float = 0.0  # the whole run's wall time (every model, metrics, reading)
    degradation: Degradation | None = None  # how the LR was made from HR, if not the benchmark's
    record: dict[str, Any] = field(default_factory=dict)  # PreparedModel.record of this model

    @property
    def timing(self) -> dict[str, float | None]:
        """This model's own time: one-off costs apart, then upscaling over the scored images."""
        scored = [r for r in self.images if r.seconds is not None]
        upscale = sum(r.seconds for r in scored) if scored else None  # type: ignore[misc]
        pixels = sum(r.output_pixels for r in scored)
        return {
            "load_seconds": self.record.get("load_seconds"),
            "warm_up_seconds": self.record.get("warm_up_seconds"),
            "upscale_seconds": None if upscale is None else round(upscale, 4),
            "output_megapixels": round(pixels / 1e6, 4),
            "seconds_per_output_megapixel": _round(per_megapixel(upscale, pixels)),
        }

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.images if r.error is not None]

    @property
    def means(self) -> dict[str, float | None]:
        """Mean of each metric over the images that were scored (None if any of them lacks it)."""
        scored = [r for r in self.images if r.error is None]

        def mean(values: list[float | None]) -> float | None:
            if not values or any(v is None for v in values):
                return None
            return float(np.mean(values))  # type: ignore[arg-type]

        return {m: mean([getattr(r, m) for r in scored]) for m in METRICS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "means": {k: _finite(v) for k, v in self.means.items()},
            "images": [
                {
                    "name": r.name,
                    "psnr": _finite(r.psnr),
                    "ssim": r.ssim,
                    "lpips": r.lpips,
                    "niqe": r.niqe,
                    "seconds": _round(r.seconds),
                    **({"error": r.error} if r.error else {}),
                }
                for r in self.images
            ],
            "scored": len(self.images) - len(self.failed),
            "failed": len(self.failed),
            "protocol": self.protocol,
            "model": self.model,
            "model_details": {k: v for k, v in self.record.items() if k not in ("load_seconds", "warm_up_seconds")},
            "timing": self.timing,
            "dataset": self.dataset,
            "scale": self.scale,
            "lpips_note": self.lpips_note,
            "niqe_note": self.niqe_note,
            "degradation": None if self.degradation is None else self.degradation.to_dict(),
            "seconds": self.timing["upscale_seconds"],
            "run_seconds": round(self.seconds, 3),
            "versions": software_versions(),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: identical images (PSNR = inf) are written as null."""
    return value if value is None or math.isfinite(value) else None


# ---------------------------------------------------------------- upscalers


def make_upscaler(
    model: str, options: InferenceOptions, *, offline: bool | None = None, bicubic_scale: int = 4
) -> tuple[Upscale, int]:
    """``bicubic`` (at ``bicubic_scale``) or a generator (registry name / checkpoint path) ->
    (uint8 LR -> uint8 SR function, scale)."""
    prepared = prepare_model(model, options, offline=offline, warm=False, bicubic_scale=bicubic_scale)
    return prepared.upscale, prepared.scale


def bicubic_record(scale: int = 4) -> dict[str, Any]:
    """What the ``bicubic`` baseline at ``scale`` is, in records."""
    return {
        "name": BICUBIC,
        "version": None,
        "path": None,
        "sha256": None,
        "architecture": f"bicubic (MATLAB imresize, x{scale})",
        "config": None,
        "device": "cpu",
        "precision": "fp64",
        "tile": None,
        "backend": "numpy",
    }


#: What the ``bicubic`` baseline (x4) is, in records.
BICUBIC_RECORD: dict[str, Any] = bicubic_record(4)


def prepare_model(
    model: str,
    options: InferenceOptions | None,
    *,
    offline: bool | None = None,
    warm: bool = True,
    bicubic_scale: int = 4,
) -> PreparedModel:
    """``bicubic`` (at ``bicubic_scale``) or a generator (registry name / checkpoint path), loaded (and
    with ``warm``, warmed up: :func:`~spsr_cli.engine.records.warm_up`) with its record."""
    if model == BICUBIC:
        return PreparedModel(
            lambda lr: bicubic_upscale(lr, bicubic_scale),
            bicubic_scale,
            {**bicubic_record(bicubic_scale), "load_seconds": 0.0},
        )
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.weights.loader import load_generator

    started = time.perf_counter()
    module = load_generator(model, offline=offline)
    upscaler = Upscaler(module, options or InferenceOptions())
    loaded = time.perf_counter() - started
    record = {
        **describe_model(model, module),
        **run_settings(upscaler),
        "load_seconds": round(loaded, 4),
        "warm_up_seconds": _round(warm_up(upscaler)) if warm else None,
    }
    return PreparedModel(EngineUpscale(upscaler), upscaler.scale, record)


def module_upscaler(module: torch.nn.Module, options: InferenceOptions) -> tuple[Upscale, int]:
    """A generator module -> (uint8 H x W x 3 LR -> uint8 sH x sW x 3 SR function, scale), through the
    same tiled engine and quantisation as every evaluation (training validation uses it too)."""
    from spsr_cli.engine.tiling import Upscaler

    return EngineUpscale(Upscaler(module, options)), module.scale


class EngineUpscale:
    """uint8 H x W x 3 LR -> uint8 sH x sW x 3 SR through an :class:`~spsr_cli.engine.tiling.Upscaler`,
    remembering which backends ran, in which precision, for the results' provenance (under
    ``--backend auto`` a few small images may run in torch before OpenVINO takes over)."""

    def __init__(self, upscaler: Any) -> None:
        self.upscaler = upscaler
        self.ran: set[tuple[str, Any]] = set()  # (backend name, torch dtype)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float().div_(255.0)
        out = self.upscaler.upscale(x)[0]  # 3 x sH x sW in [0, 1]
        self.ran.add((self.upscaler.backend.name, self.upscaler.backend.dtype))
        return quantise(out)


def record_what_ran(prepared: Sequence[PreparedModel]) -> None:
    """Set each model record's ``backend`` and ``precision`` to what ran (not the choice), where any image ran."""
    from spsr_cli.engine.batch import ran_settings

    for model in prepared:
        if isinstance(model.upscale, EngineUpscale) and model.upscale.ran:
            model.record.update(ran_settings(model.upscale.ran))


def make_upscalers(
    models: Sequence[str],
    options: InferenceOptions | None,
    *,
    offline: bool | None,
    given: Sequence[tuple[Upscale, int]] | None = None,
    purpose: str = "share one run",
) -> tuple[list[tuple[Upscale, int]], int]:
    """One upscaler per model (or the ``given`` ones, one per model) and their common scale.

    ``bicubic`` takes the scale of the other models (x4 alone). Raises :class:`UsageError` when
    the models' scales differ (``purpose`` says what they cannot do).
    """
    prepared, scale = prepare_models(models, options, offline=offline, given=given, purpose=purpose, warm=False)
    return [(p.upscale, p.scale) for p in prepared], scale


def prepare_models(
    models: Sequence[str],
    options: InferenceOptions | None,
    *,
    offline: bool | None,
    given: Sequence[tuple[Upscale, int]] | None = None,
    purpose: str = "share one run",
    warm: bool = True,
) -> tuple[list[PreparedModel], int]:
    """:func:`prepare_model` for each model (or the ``given`` upscalers, one per model, recorded by name
    only) and their common scale. ``bicubic`` takes the scale of the other models (x4 alone). Raises
    :class:`UsageError` when the scales differ (``purpose`` says what they cannot do)."""
    if given is not None:
        prepared = [PreparedModel(fn, scale, {"name": m}) for m, (fn, scale) in zip(models, given)]
        if len(given) != len(models):
            raise ValueError(f"{len(models)} models but {len(given)} upscalers")
    else:
        networks = {m: prepare_model(m, options, offline=offline, warm=warm) for m in models if m != BICUBIC}
        native = sorted({p.scale for p in networks.values()})
        bicubic_scale = native[0] if len(native) == 1 else 4
        prepared = [
            networks[m] if m in networks else prepare_model(m, None, warm=warm, bicubic_scale=bicubic_scale)
            for m in models
        ]
    scales = {p.scale for p in prepared}
    if len(scales) != 1:
        found = ", ".join(f"x{s}" for s in sorted(scales))
        raise UsageError(f"models of different scales cannot {purpose} ({found}); use models of one scale")
    return prepared, scales.pop()


def quantise(image: torch.Tensor) -> np.ndarray:
    """3 x H x W float tensor in [0, 1] -> H x W x 3 uint8, rounding half up like MATLAB's ``im2uint8``
    (:func:`~spsr_cli.eval.datasets.to_uint8`, the one quantiser)."""
    return to_uint8(image.detach().cpu().permute(1, 2, 0).numpy())


def model_labels(models: Sequence[str]) -> list[str]:
    """Short unique names for table rows and folders: a registry name as is, a path by its file stem."""
    labels: list[str] = []
    for model in models:
        base = Path(model).stem if ("/" in model or os.sep in model or Path(model).suffix) else model
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", base) or "model"
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Crop:
    """A crop window in HR pixels: top-left ``x``, ``y`` and edge ``size`` (None: chosen automatically)."""

    x: int | None = None
    y: int | None = None
    size: int = 96


def evaluate(
    source: DatasetSource,
    *,
    model: str = BICUBIC,
    protocol: Protocol | str = "spsr-paper",
    options: InferenceOptions | None = None,
    lpips: bool = True,
    lpips_model: LPIPS | None = None,
    niqe: bool = True,
    niqe_model: NIQEModel | None = None,
    save_images: Path | None = None,
    crop: Crop | None = None,
    progress: Progress | None = None,
    offline: bool | None = None,
    trust_unverified: bool = False,
    upscale: Upscale | None = None,
    scale: int | None = None,
    degradation: Degradation | None = None,
) -> EvalResult:
    """Super-resolve every LR image of ``source`` with one model and score it against its HR.

    ``upscale``/``scale`` may replace ``model`` (a function uint8 H x W x 3 -> uint8 sH x sW x 3).
    See :func:`evaluate_many` for the other arguments.
    """
    upscalers = None if upscale is None else [(upscale, scale or 4)]
    return evaluate_many(
        source,
        models=[model],
        protocol=protocol,
        options=options,
        lpips=lpips,
        lpips_model=lpips_model,
        niqe=niqe,
        niqe_model=niqe_model,
        save_images=save_images,
        crop=crop,
        progress=progress,
        offline=offline,
        trust_unverified=trust_unverified,
        upscalers=upscalers,
        degradation=degradation,
    )[0]


def evaluate_many(
    source: DatasetSource,
    *,
    models: Sequence[str],
    protocol: Protocol | str = "spsr-paper",
    options: InferenceOptions | None = None,
    lpips: bool = True,
    lpips_model: LPIPS | None = None,
    niqe: bool = True,
    niqe_model: NIQEModel | None = None,
    save_images: Path | None = None,
    crop: Crop | None = None,
    progress: Progress | None = None,
    offline: bool | None = None,
    trust_unverified: bool = False,
    upscalers: Sequence[tuple[Upscale, int]] | None = None,
    degradation: Degradation | None = None,
) -> list[EvalResult]:
    """Score several models on ``source`` in one pass over its images; one :class:`EvalResult` per model.

    LPIPS needs weights (see :mod:`spsr_cli.weights.lpips_weights`) and NIQE its pristine model
    (:func:`spsr_cli.weights.niqe.load_niqe_model`); when either cannot be had the other metrics
    are still reported, with ``lpips_note``/``niqe_note`` saying why. ``save_images``: each
    model's SR images (``DIR/NAME.png`` for one model, ``DIR/LABEL/NAME.png`` for several) and
    side-by-side crops ``DIR/crops/NAME.png`` (HR, then each model; window from ``crop``, else the
    most detailed part of HR). An image that fails to load or pair becomes a row with ``error``.
    ``degradation``: make every LR from HR with that pipeline (:mod:`spsr_cli.eval.degradation`), never
    using ``source.lr_dir``; the results record it.
    """
    if not models:
        raise UsageError("no model to evaluate")
    started = time.perf_counter()
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    prepared, scale = prepare_models(models, options, offline=offline, given=upscalers, purpose="share one evaluation")
    labels = model_labels(models)
    _check_save_dir(save_images, source)
    lpips_net, lpips_note = _lpips_or_note(lpips, lpips_model, offline=offline, trust_unverified=trust_unverified)
    niqe_params, niqe_note = _niqe_or_note(niqe, niqe_model, offline=offline)
    dataset = source.to_dict()
    if degradation is not None:
        if source.lr_dir is not None:
            log.info(
                "LR made from HR by --degradation %s; the LR images in %s are not used", degradation.spec, source.lr_dir
            )
        dataset["lr"] = f"generated (--degradation {degradation.spec})"
    lr_dir = None if degradation is not None else source.lr_dir
    if lr_dir is not None and source.lr_scale not in (None, scale):
        log.info(
            "%s's published LR is x%d and the model x%d: LR made from HR by MATLAB bicubic x%d instead",
            source.name,
            source.lr_scale,
            scale,
            scale,
        )
        lr_dir = None
        dataset["lr"] = f"generated (MATLAB bicubic x{scale}; the published LR is x{source.lr_scale})"
    unpaired: list[tuple[str, str]] = []
    files = pair_files(source.hr_dir, lr_dir, unpaired=unpaired)
    results = [
        EvalResult(
            protocol=proto.name,
            model=m,
            dataset=dataset,
            scale=scale,
            lpips_note=lpips_note,
            niqe_note=niqe_note,
            degradation=degradation,
            record=p.record,
        )
        for m, p in zip(models, prepared)
    ]
    for name, problem in unpaired:  # an HR image without its LR partner: a failed row, the rest are scored
        log.error("%s: %s", name, problem)
        for result in results:
            result.images.append(ImageResult(name=name, psnr=None, ssim=None, lpips=None, error=problem))
    for done, (name, hr_path, lr_path) in enumerate(files, start=1):
        try:
            pair = load_pair(name, hr_path, lr_path, scale, degradation=degradation)
        except ImageError as err:
            log.error("%s: %s", name, err)
            for result in results:
                result.images.append(ImageResult(name=name, psnr=None, ssim=None, lpips=None, error=str(err)))
        else:
            outputs = []
            for result, label, model in zip(results, labels, prepared):
                sub = None if save_images is None else (save_images if len(models) == 1 else save_images / label)
                try:
                    row, sr = score_pair(pair, model.upscale, proto, scale, lpips_net, sub, niqe_model=niqe_params)
                except ImageError as err:
                    log.error("%s", err)
                    result.images.append(ImageResult(name=name, psnr=None, ssim=None, lpips=None, error=str(err)))
                    continue
                result.images.append(row)
                outputs.append(sr)
            if save_images is not None and len(outputs) == len(models):
                _write_crops(save_images / "crops" / f"{name}.png", pair.hr, outputs, ["HR", *labels], crop)
        if progress is not None:
            progress(done, len(files), name)
    seconds = time.perf_counter() - started
    record_what_ran(prepared)
    for result in results:
        result.seconds = seconds
        _note_missing_niqe(result, niqe_params is not None, proto.border_for(scale) or 0)
        if unpaired:
            result.images.sort(key=lambda r: r.name)
    return results


def score_pair(
    pair: ImagePair,
    upscale: Upscale,
    protocol: Protocol,
    scale: int,
    lpips_net: LPIPS | None,
    save_dir: Path | None,
    *,
    niqe_model: NIQEModel | None = None,
) -> tuple[ImageResult, np.ndarray]:
    """Score one pair: (its row, the uint8 SR image H x W x 3); the row's ``seconds`` time the upscaling alone."""
    started = time.perf_counter()
    sr = upscale(pair.lr)
    seconds = time.perf_counter() - started
    if sr.shape != pair.hr.shape:
        raise SPSRError(
            f"{pair.name}: the model made {sr.shape[1]}x{sr.shape[0]} but HR is {pair.hr.shape[1]}x{pair.hr.shape[0]}"
        )
    try:
        p, s = psnr_ssim(sr, pair.hr, protocol=protocol, scale=scale)
    except RuntimeError as err:  # torch's message for a window larger than the image
        border = protocol.border_for(scale) or 0
        raise ImageError(
            f"{pair.name} is too small to score: {pair.hr.shape[1]}x{pair.hr.shape[0]} HR pixels, less the "
            f"{border}-pixel border, leave no room for SSIM's 11 x 11 window ({err})"
        ) from None
    d = None
    if lpips_net is not None and min(sr.shape[:2]) >= MIN_SIZE:  # smaller: no LPIPS for this image
        with torch.no_grad():
            d = float(lpips_net(image_to_lpips_input(sr), image_to_lpips_input(pair.hr))[0])
    q = None
    if niqe_model is not None:
        try:
            q = niqe_of_image(sr, niqe_model, border=protocol.border_for(scale))
        except NIQEError as err:  # fewer than two 96 x 96 blocks: no NIQE (evaluate_many says so once)
            log.debug("%s: no NIQE: %s", pair.name, err)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        _write_png(save_dir / f"{pair.name}.png", sr)
    row = ImageResult(
        name=pair.name, psnr=p, ssim=s, lpips=d, niqe=q, seconds=seconds, output_pixels=sr.shape[0] * sr.shape[1]
    )
    return row, sr


def _note_missing_niqe(result: EvalResult, computed: bool, border: int) -> None:
    """Say once, in ``niqe_note``, how many scored images have no NIQE and why (it needs two blocks)."""
    scored = [r for r in result.images if r.error is None]
    missing = [r.name for r in scored if r.niqe is None]
    if computed and missing and result.niqe_note is None:
        result.niqe_note = (
            f"{len(missing)} of {len(scored)} images have no NIQE ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): NIQE needs two {NIQE_BLOCK} x {NIQE_BLOCK} blocks of "
            f"output after the {border}-pixel border, e.g. {2 * NIQE_BLOCK + 2 * border} x {NIQE_BLOCK + 2 * border} "
            "pixels; the mean NIQE is left empty"
        )


def _lpips_or_note(
    wanted: bool, given: LPIPS | None, *, offline: bool | None, trust_unverified: bool
) -> tuple[LPIPS | None, str | None]:
    if not wanted:
        return None, "LPIPS not requested (--no-lpips)"
    if given is not None:
        return given, None
    try:
        return load_lpips(offline=bool(offline), trust_unverified=trust_unverified), None
    except SPSRError as err:
        log.info("LPIPS unavailable: %s", err)
        return None, f"LPIPS weights unavailable: {err}"


def _niqe_or_note(
    wanted: bool, given: NIQEModel | None, *, offline: bool | None
) -> tuple[NIQEModel | None, str | None]:
    if not wanted:
        return None, "NIQE not requested (--no-niqe)"
    if given is not None:
        return given, None
    try:
        return load_niqe_model(offline=bool(offline)), None
    except SPSRError as err:
        log.info("NIQE unavailable: %s", err)
        return None, f"NIQE model unavailable: {err}"


def _check_save_dir(save_dir: Path | None, source: DatasetSource) -> None:
    if save_dir is None:
        return
    inputs = {source.hr_dir.resolve()} | ({source.lr_dir.resolve()} if source.lr_dir else set())
    if save_dir.resolve() in inputs:
        raise UsageError(f"--save-images {save_dir} is an input folder; choose another folder")
    if save_dir.exists() and not save_dir.is_dir():
        raise UsageError(f"--save-images {save_dir} exists and is not a folder")
    save_dir.mkdir(parents=True, exist_ok=True)


def _write_png(path: Path, image: np.ndarray) -> None:
    """H x W x 3 uint8 ``image`` as a PNG, atomically (:func:`spsr_cli.io.images.write_image`)."""
    write_image(path, SpsrImage(rgb=image), format="PNG")


# ---------------------------------------------------------------- side-by-side crops


def crop_window(hr: np.ndarray, crop: Crop | None) -> tuple[int, int, int]:
    """(x, y, size) of the crop: the given window (clamped into the image), else the most detailed one.

    "Most detailed": the window, on a grid of half-window steps, with the largest mean squared
    luma gradient of HR (the textures and edges the papers' figures show).
    """
    crop = crop or Crop()
    h, w = hr.shape[:2]
    size = max(8, min(crop.size, h, w))
    if crop.x is not None and crop.y is not None:
        return min(max(0, crop.x), w - size), min(max(0, crop.y), h - size), size
    y = hr.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) if hr.ndim == 3 else hr.astype(np.float64)
    energy = np.zeros_like(y)
    energy[:, 1:] += np.diff(y, axis=1) ** 2
    energy[1:, :] += np.diff(y, axis=0) ** 2
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 2)
    best, where = -1.0, (0, 0)
    for top in list(range(0, h - size + 1, step)) + [h - size]:
        for left in list(range(0, w - size + 1, step)) + [w - size]:
            total = (
                integral[top + size, left + size]
                - integral[top, left + size]
                - integral[top + size, left]
                + integral[top, left]
            )
            if total > best:
                best, where = float(total), (left, top)
    return where[0], where[1], size


def side_by_side(
    hr: np.ndarray,
    outputs: Sequence[np.ndarray],
    labels: Sequence[str],
    crop: Crop | None = None,
    *,
    zoom: int = 2,
    gap: int = 4,
) -> np.ndarray:
    """One uint8 RGB figure: the same crop of HR and of each SR output, enlarged ``zoom`` x (nearest
    neighbour, so pixels stay visible), side by side on white with a label under each panel."""
    x, y, size = crop_window(hr, crop)
    panels = [img[y : y + size, x : x + size] for img in (hr, *outputs)]
    panels = [np.repeat(np.repeat(p, zoom, axis=0), zoom, axis=1) for p in panels]
    edge, label_h = size * zoom, 14
    figure = Image.new("RGB", (len(panels) * edge + (len(panels) + 1) * gap, edge + 2 * gap + label_h), "white")
    draw = ImageDraw.Draw(figure)
    for i, (panel, label) in enumerate(zip(panels, labels)):
        left = gap + i * (edge + gap)
        figure.paste(Image.fromarray(np.ascontiguousarray(panel)), (left, gap))
        draw.text((left + 2, gap + edge + 2), label[: max(4, edge // 6)], fill="black")
    return np.asarray(figure)


def _write_crops(
    path: Path, hr: np.ndarray, outputs: Sequence[np.ndarray], labels: Sequence[str], crop: Crop | None
) -> None:
    _write_png(path, side_by_side(hr, outputs, labels, crop))


# ---------------------------------------------------------------- writers


def write_json(result: EvalResult | Sequence[EvalResult], path: Path) -> None:
    """The ``--json`` document, written atomically: :meth:`EvalResult.to_dict` for one model,
    ``{"results": [...]}`` (one per model, in ``--compare`` order) for several."""
    if isinstance(result, EvalResult):
        doc: dict[str, Any] = result.to_dict()
    else:
        doc = {"results": [r.to_dict() for r in result]}
    write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def write_csv(result: EvalResult | Sequence[EvalResult], path: Path) -> None:
    """One row per image (name, psnr, ssim, lpips, niqe, error) and a last ``mean`` row, written
    atomically; for several models a first ``model`` column, and one block per model; with a
    ``--degradation`` a last ``degradation`` column holding its spec on every row."""
    several = not isinstance(result, EvalResult)
    results = list(result) if several else [result]  # type: ignore[arg-type]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    lead = ["model"] if several else []
    degraded = any(res.degradation is not None for res in results)
    writer.writerow([*lead, "name", "psnr", "ssim", "lpips", "niqe", "error", *(["degradation"] if degraded else [])])
    for res in results:
        first = [res.model] if several else []
        last = [res.degradation.spec if res.degradation else "bicubic"] if degraded else []
        for r in res.images:
            name = r.name.encode("utf-8", "backslashreplace").decode("utf-8")  # a non-UTF-8 file name, escaped
            writer.writerow(
                [*first, name, _fmt(r.psnr), _fmt(r.ssim), _fmt(r.lpips), _fmt(r.niqe), r.error or "", *last]
            )
        means = res.means
        writer.writerow([*first, "mean", *(_fmt(means[m]) for m in METRICS), "", *last])
    write_text_atomic(path, buffer.getvalue())


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


__all__ = [
    "BICUBIC",
    "Crop",
    "EvalResult",
    "ImageResult",
    "METRICS",
    "PreparedModel",
    "crop_window",
    "evaluate",
    "evaluate_many",
    "make_upscaler",
    "model_labels",
    "prepare_model",
    "prepare_models",
    "side_by_side",
    "quantise",
    "score_pair",
    "software_versions",
    "write_csv",
    "write_json",
]
