"""``spsr export``: parse options, report; the work is in spsr_cli.engine.export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spsr_cli.cli.common import OfflineOpt, console
from spsr_cli.errors import SPSRError, UsageError


def export_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Registry name (see `spsr weights list`) or weights file (.safetensors/.pth).", show_default=False
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="Output format: onnx.")] = "onnx",
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="File to write (default: MODEL.onnx, or MODEL-tileN.onnx, here)."),
    ] = None,
    tile: Annotated[
        Optional[int],
        typer.Option(
            "--tile",
            "-t",
            min=8,
            help="A fixed 1 x 3 x N x N input (TensorRT, CoreML and ncnn prefer one); default: free batch and size.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    offline: OfflineOpt = False,
) -> None:
    """Write a model as an ONNX file (image output, float32) for other runtimes; checked with onnxruntime
    against torch where onnxruntime is installed."""
    from spsr_cli.engine.export import CHECK_MIN_PSNR, FORMATS, check_onnx, export_onnx, onnxruntime_installed
    from spsr_cli.weights.loader import load_generator

    if format.lower() not in FORMATS:
        raise UsageError(f"--format {format!r} is not one we write; use {', '.join(FORMATS)}")
    if output is None:
        stem = Path(model).stem if Path(model).suffix.lower() in (".safetensors", ".pth", ".pt") else model
        output = Path(f"{stem}{f'-tile{tile}' if tile else ''}.onnx")
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; name the file to write, e.g. -o {output / 'model.onnx'}")
    if output.exists() and not force:
        raise UsageError(f"{output} exists; pass --force to replace it, or choose another -o")
    generator = load_generator(model, offline=offline or None)
    console.print(f"exporting {model} ({generator.config.architecture} x{generator.scale}) to ONNX ...", markup=False)
    result = export_onnx(generator, output, tile=tile)
    shape = " x ".join(str(s) for s in result.input_shape)
    console.print(
        f"input lr: {shape} float32 RGB in [0, 1]; output sr: {generator.scale}x the height and width, "
        f"not clamped ({result.size_bytes / 2**20:.1f} MiB, {result.exporter} exporter)"
    )
    if onnxruntime_installed():
        agreement = check_onnx(output, generator, tile=tile)
        console.print(f"onnxruntime agrees with torch float32 to {agreement:.1f} dB PSNR on a test image")
        if agreement < CHECK_MIN_PSNR:
            raise SPSRError(
                f"{output} was written but disagrees with torch ({agreement:.1f} dB < {CHECK_MIN_PSNR:g} dB); "
                "please report it"
            )
    else:
        console.print("onnxruntime is not installed: the file was not checked (pip install onnxruntime)")
    console.print(f"-> {output}", markup=False)


__all__ = ["export_command"]
