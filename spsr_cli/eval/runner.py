"""``evaluate(...)``: super-resolve a benchmark set and measure PSNR / SSIM / LPIPS.

The SR output is quantised to uint8 (``round(255 x)``) before any metric, as the
papers' MATLAB toolboxes do. ``model="bicubic"`` is the tables' baseline row:
MATLAB-style bicubic upscaling of the LR.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import ImageError, SPSRError, UsageError
from spsr_cli.eval.datasets import DatasetSource, ImagePair, load_pair, pair_files
from spsr_cli.eval.lpips import LPIPS, image_to_lpips_input, load_lpips
from spsr_cli.eval.metrics import Protocol, get_protocol, psnr_ssim
from spsr_cli.io.imresize import bicubic_upscale

log = logging.getLogger(__name__)

BICUBIC = "bicubic"
#: called after each image with (images done, images total, image name)
Progress = Callable[[int, int, str], None]
Upscale = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ImageResult:
    name: str
    psnr: float
    ssim: float
    lpips: float | None


@dataclass
class EvalResult:
    """Everything ``spsr eval`` reports; ``to_dict()`` is the ``--json`` document."""

    protocol: str
    model: str
    dataset: dict[str, Any]
    scale: int
    images: list[ImageResult] = field(default_factory=list)
    lpips_note: str | None = None  # why LPIPS is missing, if it is
    seconds: float = 0.0

    @property
    def means(self) -> dict[str, float | None]:
        def mean(values: list[float | None]) -> float | None:
            if not values or any(v is None for v in values):
                return None
            return float(np.mean(values))  # type: ignore[arg-type]

        return {
            "psnr": mean([r.psnr for r in self.images]),
            "ssim": mean([r.ssim for r in self.images]),
            "lpips": mean([r.lpips for r in self.images]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "means": {k: _finite(v) for k, v in self.means.items()},
            "images": [
                {"name": r.name, "psnr": _finite(r.psnr), "ssim": r.ssim, "lpips": r.lpips} for r in self.images
            ],
            "protocol": self.protocol,
            "model": self.model,
            "dataset": self.dataset,
            "scale": self.scale,
            "lpips_note": self.lpips_note,
            "seconds": round(self.seconds, 3),
            "versions": software_versions(),
        }


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: identical images (PSNR = inf) are written as null."""
    return value if value is None or math.isfinite(value) else None


def software_versions() -> dict[str, str]:
    import PIL

    from spsr_cli import __version__

    return {
        "spsr-cli": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "pillow": PIL.__version__,
    }


# ---------------------------------------------------------------- upscalers


def make_upscaler(model: str, options: InferenceOptions, *, offline: bool | None = None) -> tuple[Upscale, int]:
    """``bicubic`` or a generator (registry name / checkpoint path) -> (uint8 LR -> uint8 SR function, scale)."""
    if model == BICUBIC:
        return (lambda lr: bicubic_upscale(lr, 4)), 4
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.weights.loader import load_generator

    upscaler = Upscaler(load_generator(model, offline=offline), options)

    def run(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div_(255.0)
        out = upscaler.upscale(x)[0]  # 3 x sH x sW in [0, 1]
        return quantise(out)

    return run, upscaler.scale


def quantise(image: torch.Tensor) -> np.ndarray:
    """3 x H x W float in [0, 1] -> H x W x 3 uint8, rounding half up like MATLAB's ``im2uint8``."""
    return torch.floor(image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- evaluation


def evaluate(
    source: DatasetSource,
    *,
    model: str = BICUBIC,
    protocol: Protocol | str = "spsr-paper",
    options: InferenceOptions | None = None,
    lpips: bool = True,
    lpips_model: LPIPS | None = None,
    save_images: Path | None = None,
    progress: Progress | None = None,
    offline: bool | None = None,
    trust_unverified: bool = False,
    upscale: Upscale | None = None,
    scale: int | None = None,
) -> EvalResult:
    """Super-resolve every LR image of ``source`` and score it against its HR.

    ``upscale``/``scale`` may replace ``model`` (a function uint8 H x W x 3 -> uint8 sH x sW x 3).
    LPIPS needs weights (see :mod:`spsr_cli.weights.lpips_weights`); if none can be had,
    PSNR/SSIM are still reported and ``lpips_note`` says why LPIPS is missing.
    """
    started = time.perf_counter()
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    if upscale is None:
        upscale, scale = make_upscaler(model, options or InferenceOptions(), offline=offline)
    assert scale is not None
    _check_save_dir(save_images, source)
    lpips_net, note = _lpips_or_note(lpips, lpips_model, offline=offline, trust_unverified=trust_unverified)
    files = pair_files(source.hr_dir, source.lr_dir)
    result = EvalResult(protocol=proto.name, model=model, dataset=source.to_dict(), scale=scale, lpips_note=note)
    for done, (name, hr_path, lr_path) in enumerate(files, start=1):
        pair = load_pair(name, hr_path, lr_path, scale)
        result.images.append(score_pair(pair, upscale, proto, scale, lpips_net, save_images))
        if progress is not None:
            progress(done, len(files), name)
    result.seconds = time.perf_counter() - started
    return result


def score_pair(
    pair: ImagePair, upscale: Upscale, protocol: Protocol, scale: int, lpips_net: LPIPS | None, save_dir: Path | None
) -> ImageResult:
    sr = upscale(pair.lr)
    if sr.shape != pair.hr.shape:
        raise SPSRError(f"{pair.name}: the model made {sr.shape[1]}x{sr.shape[0]} but HR is {pair.hr.shape[1]}x{pair.hr.shape[0]}")
    p, s = psnr_ssim(sr, pair.hr, protocol=protocol, scale=scale)
    d = None
    if lpips_net is not None:
        with torch.no_grad():
            d = float(lpips_net(image_to_lpips_input(sr), image_to_lpips_input(pair.hr))[0])
    if save_dir is not None:
        _write_png(save_dir / f"{pair.name}.png", sr)
    return ImageResult(name=pair.name, psnr=p, ssim=s, lpips=d)


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ImageError(f"cannot write {path}: {err}") from None


# ---------------------------------------------------------------- writers


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(result: EvalResult, path: Path) -> None:
    """The ``--json`` document (see :meth:`EvalResult.to_dict`), written atomically."""
    _write_text_atomic(path, json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")


def write_csv(result: EvalResult, path: Path) -> None:
    """One row per image (name, psnr, ssim, lpips) and a last ``mean`` row, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "psnr", "ssim", "lpips"])
    for r in result.images:
        writer.writerow([r.name, _fmt(r.psnr), _fmt(r.ssim), _fmt(r.lpips)])
    means = result.means
    writer.writerow(["mean", _fmt(means["psnr"]), _fmt(means["ssim"]), _fmt(means["lpips"])])
    _write_text_atomic(path, buffer.getvalue())


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


__all__ = [
    "BICUBIC",
    "EvalResult",
    "ImageResult",
    "evaluate",
    "make_upscaler",
    "quantise",
    "score_pair",
    "software_versions",
    "write_csv",
    "write_json",
]
