"""Options and helpers shared by the commands (parsing and reporting only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from spsr_cli.engine.options import MIN_TILE, InferenceOptions
from spsr_cli.errors import SPSRError, UsageError

#: Messages, progress and tables for people go to stderr; machine-readable output to stdout.
#: No emoji codes: a file name holding ``:thumbs_up:`` is shown as it is.
console = Console(stderr=True, highlight=False, emoji=False)
stdout = Console(highlight=False, emoji=False)


def one_line(path: object) -> str:
    """A file name on one line: newlines and other control characters shown as escapes (``\\n``), so a
    name holding one never splits a one-line-per-image log."""
    return "".join(c if " " <= c != "\x7f" else repr(c)[1:-1] for c in str(path))


def esc(value: object) -> str:
    """``value`` (a file name, a model name, an error message) as literal text inside rich markup:
    ``m[/b]ok.png`` or ``photo[final].png`` are shown as they are, never read as markup."""
    return escape(str(value))


class Interrupted(Exception):
    """Ctrl-C during a command, with the line that says what was finished (exit code 130)."""


#: ``--help`` panels: options grouped by what they are about.
RUN_PANEL = "Speed and memory"

TileOpt = Annotated[
    str,
    typer.Option(
        "--tile",
        "-t",
        help="Tile edge in input pixels, 'auto' (CPU: the tile of least compute up to 128 pixels, 96 in fp32; "
        "GPU: the largest that fits in free memory) or 0 for the whole image.",
        rich_help_panel=RUN_PANEL,
    ),
]
TileOverlapOpt = Annotated[
    Optional[int],
    typer.Option(
        "--tile-overlap",
        min=0,
        help="Context pixels around each tile (input pixels; default: the model's own, 16 for SPSR and RRDBNet).",
        rich_help_panel=RUN_PANEL,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=RUN_PANEL)]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision",
        rich_help_panel=RUN_PANEL,
        help="fp32, fp16 or bf16 (default: fp16 on CUDA; bf16 on CPUs where it is faster for the backend: "
        "AMX or AVX512-BF16; fp32 elsewhere).",
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        rich_help_panel=RUN_PANEL,
        help="auto, torch or openvino. auto: OpenVINO on the CPU where it is installed (pip install "
        "'spsr-cli\\[openvino]'; converts each model once, cached), torch elsewhere.",
    ),
]
Fp32Opt = Annotated[bool, typer.Option("--fp32", help="Same as --precision fp32.", rich_help_panel=RUN_PANEL)]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Use only cached downloads; never touch the network (also SPSR_OFFLINE=1 or HF_HUB_OFFLINE=1).",
    ),
]


def parse_tile(value: str, overlap: int | None = None) -> int | str:
    """``--tile``: ``auto``, 0 (the whole image) or at least :data:`~spsr_cli.engine.options.MIN_TILE` pixels.

    ``overlap``: the ``--tile-overlap`` given (None: the model's own, at least 16 pixels), for the message.
    """
    value = value.strip().lower()
    if value == "auto":
        return "auto"
    try:
        tile = int(value)
    except ValueError:
        raise UsageError(f"--tile {value!r} is not a number; use a pixel count such as 256, 0 or auto") from None
    if tile < 0:
        raise UsageError(f"--tile must be >= 0, got {tile}")
    if 0 < tile < MIN_TILE:
        context = 16 if overlap is None else overlap
        given = "--tile-overlap" if overlap is not None else "the models' default context is 16 pixels or more"
        waste = ((tile + 2 * context) / tile) ** 2
        raise UsageError(
            f"--tile {tile} is below {MIN_TILE} pixels: each tile is computed with {context} pixels of context on "
            f"every side ({given}), so tiles this small redo the work about {waste:.0f} times over; "
            f"use --tile {MIN_TILE} or more, 0 (the whole image) or auto"
        )
    return tile


def inference_options(
    tile: str,
    tile_overlap: int | None,
    device: str,
    precision: str | None,
    *,
    fp32: bool = False,
    backend: str = "auto",
) -> InferenceOptions:
    """Build :class:`InferenceOptions` from the shared CLI options (validated)."""
    if fp32:
        if precision not in (None, "fp32"):
            raise UsageError(f"--fp32 and --precision {precision} disagree; give one of them")
        precision = "fp32"
    if precision is not None and precision not in ("fp32", "fp16", "bf16"):
        raise UsageError(f"--precision {precision!r} is not understood; use fp32, fp16 or bf16")
    backend = backend.strip().lower()
    if backend not in ("auto", "torch", "openvino"):
        raise UsageError(f"--backend {backend!r} is not understood; use auto, torch or openvino")
    return InferenceOptions(
        device=device,
        precision=precision,  # type: ignore[arg-type]
        tile=parse_tile(tile, tile_overlap),
        tile_overlap=tile_overlap,
        backend=backend,  # type: ignore[arg-type]
    )


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a ``--json`` record atomically (file names that are not UTF-8 come out escaped)."""
    from spsr_cli.files import write_text_atomic

    try:
        write_text_atomic(path, json.dumps(record, indent=2, default=os.fsdecode) + "\n")
    except OSError as err:
        raise SPSRError(f"cannot write --json {path}: {err.strerror or err}") from None


def parse_crop(value: str | None):
    """``--crop X,Y,SIZE`` (whole numbers, X and Y >= 0, SIZE >= 8) -> :class:`~spsr_cli.eval.runner.Crop`;
    None when not given."""
    if value is None:
        return None
    try:
        x, y, size = (int(part) for part in value.split(","))
    except ValueError:
        raise UsageError(f"--crop {value!r} is not X,Y,SIZE (three whole numbers, e.g. 120,40,96)") from None
    if x < 0 or y < 0 or size < 8:
        raise UsageError(f"--crop {value!r}: X and Y must be >= 0 and SIZE >= 8")
    from spsr_cli.eval.runner import Crop  # imports torch: only when a crop is given

    return Crop(x=x, y=y, size=size)
