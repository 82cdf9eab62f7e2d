"""``spsr export``: a generator as an ONNX file, for other runtimes (TensorRT, DirectML, CoreML, ncnn).

The file holds the network's image output only (``Architecture.image`` of its forward), in
float32, opset :data:`OPSET`, weights inside the one file:

* input ``lr``: N x C x H x W float32, RGB in [0, 1];
* output ``sr``: N x C x (scale*H) x (scale*W) float32, not clamped (clamp to [0, 1] yourself).

Without ``tile`` the batch, height and width are free (dynamic axes ``batch``, ``height``,
``width``); with ``tile`` the input is fixed at 1 x C x tile x tile (what TensorRT engines,
CoreML and ncnn prefer): cut images into overlapping tiles yourself, as ``spsr upscale`` does.

It goes through ``torch.onnx.export`` (the torch.export-based exporter, which needs the
``onnxscript`` package; ``pip install "spsr-cli[onnx]"``), falling back to the TorchScript
exporter for a model torch.export cannot take. :func:`check_onnx` runs the file through
onnxruntime, where it is installed, against the torch float32 output.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spsr_cli.engine.backends import image_module
from spsr_cli.errors import BackendError, SPSRError, UsageError
from spsr_cli.files import atomic_path
from spsr_cli.model.architectures import Generator

log = logging.getLogger(__name__)

OPSET = 18
FORMATS = ("onnx",)
#: Least PSNR (dB, outputs clamped to [0, 1]) of onnxruntime against torch float32 for :func:`check_onnx` to pass.
CHECK_MIN_PSNR = 50.0
#: The edge of the smooth test image of the check (a fixed-size file is checked at its own size).
CHECK_EDGE = 32
ONNX_INSTALL = 'pip install "spsr-cli[onnx]"'


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote: the file, its input shape (None: a free size), the exporter used."""

    path: Path
    input_shape: tuple[int | str, ...]
    exporter: str
    size_bytes: int


def _example(channels: int, edge: int, seed: int = 0) -> torch.Tensor:
    """A smooth 1 x C x edge x edge float32 image in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(1, channels, max(2, edge // 4), max(2, edge // 4), generator=generator)
    return torch.nn.functional.interpolate(small, size=(edge, edge), mode="bilinear", align_corners=False)


def export_onnx(model: Generator, path: Path, *, tile: int | None = None) -> ExportResult:
    """Write ``model`` (any architecture) to ``path`` as ONNX (see the module docstring), atomically.

    ``tile``: a fixed tile x tile input; None: free batch, height and width. Raises
    :class:`UsageError` for a bad ``tile`` and :class:`BackendError` when neither exporter can
    take the model or ``onnxscript`` is missing.
    """
    if tile is not None and tile < 8:
        raise UsageError(f"--tile {tile}: give an input edge of at least 8 pixels (or leave it out for a free size)")
    if importlib.util.find_spec("onnxscript") is None:
        raise BackendError(f"exporting ONNX needs the onnxscript package: {ONNX_INSTALL}")
    module = image_module(model)
    channels = model.config.in_channels
    example = _example(channels, tile or CHECK_EDGE)
    path = Path(path)
    onnx_log = logging.getLogger("torch.onnx")  # its exporter logs a warning per missing torchvision op
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        return _export(module, example, path, tile, channels)
    finally:
        onnx_log.setLevel(level)


def _export(
    module: torch.nn.Module, example: torch.Tensor, path: Path, tile: int | None, channels: int
) -> ExportResult:
    names = {"input_names": ["lr"], "output_names": ["sr"]}
    exporter = "torch.export"
    with atomic_path(path) as tmp:
        try:
            if tile is None:
                dims = {2: torch.export.Dim("height", min=8), 3: torch.export.Dim("width", min=8)}
                shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024), **dims}}
            else:
                shapes = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                    opset_version=OPSET,
                    dynamic_shapes=shapes,
                    **names,
                )
        except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as err:
            log.warning("torch.export cannot take this model (%s); using the TorchScript exporter", err)
            exporter = "torchscript"
            axes = {"lr": {0: "batch", 2: "height", 3: "width"}, "sr": {0: "batch", 2: "out_height", 3: "out_width"}}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        module,
                        (example,),
                        str(tmp),
                        dynamo=False,
                        opset_version=OPSET,
                        dynamic_axes=None if tile else axes,
                        **names,
                    )
            except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as again:
                raise BackendError(f"this model cannot be exported to ONNX ({again})") from again
    shape: tuple[int | str, ...] = (1, channels, tile, tile) if tile else ("batch", channels, "height", "width")
    return ExportResult(path=path, input_shape=shape, exporter=exporter, size_bytes=path.stat().st_size)


def onnxruntime_installed() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


def check_onnx(path: Path, model: Generator, *, tile: int | None = None) -> float:
    """PSNR (dB) of the ONNX file's onnxruntime output against the torch float32 output of ``model``
    on a smooth test image (``tile`` x ``tile``, else :data:`CHECK_EDGE`), both clamped to [0, 1].

    Raises :class:`BackendError` when onnxruntime is not installed or cannot run the file.
    """
    if not onnxruntime_installed():
        raise BackendError(f"checking the ONNX file needs onnxruntime: {ONNX_INSTALL}")
    import onnxruntime

    x = _example(model.config.in_channels, tile or CHECK_EDGE, seed=1)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(["sr"], {"lr": x.numpy()})[0]
    except (RuntimeError, ValueError) as err:  # onnxruntime's errors derive from RuntimeError
        raise BackendError(f"onnxruntime cannot run {path} ({err})") from err
    with torch.inference_mode():
        ref = image_module(model)(x).numpy()
    if out.shape != ref.shape:
        raise SPSRError(f"the ONNX file gives a {out.shape} output where torch gives {ref.shape}")
    mse = float(np.mean((np.clip(out, 0, 1).astype(np.float64) - np.clip(ref, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


__all__ = [
    "CHECK_MIN_PSNR",
    "ExportResult",
    "FORMATS",
    "ONNX_INSTALL",
    "check_onnx",
    "export_onnx",
    "onnxruntime_installed",
]
