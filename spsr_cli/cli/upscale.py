"""``spsr upscale``: parse options, show progress, report; the work is in spsr_cli.engine.batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from spsr_cli.cli.common import DeviceOpt, OfflineOpt, PrecisionOpt, TileOpt, TileOverlapOpt, console, inference_options
from spsr_cli.engine.batch import SKIPPED, Job, OutputSpec, plan_jobs, run_jobs, shard
from spsr_cli.engine.model_choice import ModelChoice
from spsr_cli.engine.options import parse_bytes
from spsr_cli.errors import UsageError
from spsr_cli.weights.loader import load_generator
from spsr_cli.weights.manifest import load_manifest


def upscale_command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (one input) or folder.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name, checkpoint path (SPSR or ESRGAN-family .pth/.safetensors), or auto: low-quality JPEGs to realsr-df2k-jpeg, the rest to the default model.")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Appended to output names (default: _x4).")] = None,
    ext: Annotated[Optional[str], typer.Option("--ext", help="Output format by extension: png, jpg, webp, tif, bmp.")] = None,
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality.")] = 95,
    outscale: Annotated[Optional[float], typer.Option("--outscale", help="Final scale if not the model's (e.g. 2 or 3.5).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders (output mirrors the tree).")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Leave outputs that exist already.")] = False,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = 16,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    max_memory: Annotated[
        Optional[str], typer.Option("--max-memory", help="Most memory one image may take, e.g. 8G (default: what is available).")
    ] = None,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="Run the network through torch.compile (faster on GPU; slow first tile).")
    ] = False,
    offline: OfflineOpt = False,
) -> None:
    """Super-resolve images x4 (SPSR, or an ESRGAN-family model with --model)."""
    options = inference_options(tile, tile_overlap, device, precision)
    memory_limit = parse_bytes(max_memory) if max_memory is not None else None
    options = dataclasses.replace(options, memory_limit=memory_limit, compile=compile_model)
    if outscale is not None and not outscale > 0:
        raise UsageError(f"--outscale must be a positive factor such as 2 or 3.5, got {outscale}")
    generator = ModelChoice(model, options, load=lambda name: load_generator(name, offline=offline or None),
                            default_name=load_manifest().default)
    spec = OutputSpec(output=output, suffix=suffix, ext=ext)
    jobs = shard(plan_jobs(inputs, spec, scale=outscale or generator.scale, recursive=recursive))  # names: _x{real factor}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        files = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=1, visible=False)

        def on_start(job: Job) -> None:
            progress.update(tiles, description=f"  {job.source.name}", completed=0, total=1, visible=True)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        def on_done(job: Job, problem: Optional[str]) -> None:
            progress.advance(files)
            if problem and not problem.startswith(SKIPPED):  # skips are summarised below, not listed
                console.print(f"[yellow]{job.source}[/]: {problem}")

        result = run_jobs(
            jobs, generator, options, outscale=outscale, quality=quality, skip_existing=skip_existing,
            on_start=on_start, on_tile=on_tile, on_done=on_done,
        )
    reasons = [(len(result.skipped) - len(result.busy), "existing, --skip-existing"), (len(result.busy), "another process writes them")]
    detail = "; ".join(f"{n} {why}" for n, why in reasons if n)
    skipped = f"{len(result.skipped)} skipped" + (f" ({detail})" if detail else "")
    console.print(
        f"[green]{len(result.done)} written[/], {skipped}, "
        + (f"[red]{len(result.failed)} failed[/]" if result.failed else "0 failed")
    )
    if len(jobs) == 1 and result.done:
        console.print(f"-> {result.done[0].target}")
    raise typer.Exit(result.exit_code)
