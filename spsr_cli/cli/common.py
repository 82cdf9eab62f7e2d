"""Options and helpers shared by the commands (parsing and reporting only)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import UsageError
from spsr_cli.eval.runner import Crop

#: Messages, progress and tables for people go to stderr; machine-readable output to stdout.
console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)

TileOpt = Annotated[
    str, typer.Option("--tile", help="Tile edge in input pixels, 'auto' (from free memory) or 0 for the whole image.")
]
TileOverlapOpt = Annotated[int, typer.Option("--tile-overlap", min=0, help="Context pixels around each tile (input pixels).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[
    Optional[str], typer.Option("--precision", help="fp32, fp16 or bf16 (default: fp16 on CUDA; bf16 on CPUs with AMX/AVX512-BF16 units; fp32 elsewhere).")
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use only cached downloads; never touch the network.")]


def parse_tile(value: str) -> int | str:
    value = value.strip().lower()
    if value == "auto":
        return "auto"
    try:
        tile = int(value)
    except ValueError:
        raise UsageError(f"--tile {value!r} is not a number; use a pixel count such as 256, 0 or auto") from None
    if tile < 0:
        raise UsageError(f"--tile must be >= 0, got {tile}")
    return tile


def inference_options(tile: str, tile_overlap: int, device: str, precision: str | None) -> InferenceOptions:
    """Build :class:`InferenceOptions` from the shared CLI options (validated)."""
    if precision is not None and precision not in ("fp32", "fp16", "bf16"):
        raise UsageError(f"--precision {precision!r} is not understood; use fp32, fp16 or bf16")
    return InferenceOptions(device=device, precision=precision, tile=parse_tile(tile), tile_overlap=tile_overlap)  # type: ignore[arg-type]


def parse_crop(value: str | None) -> Crop | None:
    """``--crop X,Y,SIZE`` (whole numbers, X and Y >= 0, SIZE >= 8) -> :class:`Crop`; None when not given."""
    if value is None:
        return None
    try:
        x, y, size = (int(part) for part in value.split(","))
    except ValueError:
        raise UsageError(f"--crop {value!r} is not X,Y,SIZE (three whole numbers, e.g. 120,40,96)") from None
    if x < 0 or y < 0 or size < 8:
        raise UsageError(f"--crop {value!r}: X and Y must be >= 0 and SIZE >= 8")
    return Crop(x=x, y=y, size=size)
