"""``spsr upscale``: parse options, show progress, report; the work is in spsr_cli.engine.batch.

Nothing heavy is imported at module level: ``spsr --help`` must not load torch.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from spsr_cli.cli.common import (
    DeviceOpt,
    Fp32Opt,
    Interrupted,
    OfflineOpt,
    PrecisionOpt,
    TileOpt,
    TileOverlapOpt,
    console,
    inference_options,
    write_record,
)
from spsr_cli.engine.options import parse_bytes
from spsr_cli.weights.manifest import scale_variant

if TYPE_CHECKING:
    from spsr_cli.engine.batch import BatchResult, Job, JobReport

_OUT = "Output"
_RUN = "Speed and memory"


def upscale_command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Output file (one input) or folder.", rich_help_panel=_OUT)
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="Registry name, checkpoint path (SPSR or ESRGAN-family .pth/.safetensors), or auto: low-quality JPEGs "
            "to realsr-df2k-jpeg, the rest to the default model (default: the default model).",
        ),
    ] = None,
    outscale: Annotated[
        Optional[float],
        typer.Option("--outscale", "-s", help="Final scale if not the model's (e.g. 2 or 3.5).", rich_help_panel=_OUT),
    ] = None,
    suffix: Annotated[
        Optional[str],
        typer.Option(
            "--suffix",
            rich_help_panel=_OUT,
            help="Added to output names after an underscore: --suffix big gives NAME_big.png (default: x4).",
        ),
    ] = None,
    ext: Annotated[
        Optional[str],
        typer.Option("--ext", "-f", help="Output format by extension: png, jpg, webp, tif, bmp.", rich_help_panel=_OUT),
    ] = None,
    quality: Annotated[
        int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality.", rich_help_panel=_OUT)
    ] = 95,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders (output mirrors the tree).")
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Leave outputs that exist already (resumes an interrupted run).",
            rich_help_panel=_OUT,
        ),
    ] = False,
    json_path: Annotated[
        Optional[Path],
        typer.Option(
            "--json",
            rich_help_panel=_OUT,
            help="Write a record of the run: per image input, output, status, seconds; model, sha256, device, "
            "precision, tile.",
        ),
    ] = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    fp32: Fp32Opt = False,
    max_memory: Annotated[
        Optional[str],
        typer.Option(
            "--max-memory",
            help="Most memory one image may take, e.g. 8G (default: what is available).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the network through torch.compile (faster on GPU; slow first tile).",
            rich_help_panel=_RUN,
        ),
    ] = False,
    offline: OfflineOpt = False,
) -> None:
    """Super-resolve images: x4 SPSR by default, or any registered model or checkpoint with --model (x2, x3, x4)."""
    from spsr_cli.engine.batch import ModelLoader, OutputSpec, check_outscale, plan_jobs, shard

    options = inference_options(tile, tile_overlap, device, precision, fp32=fp32)
    memory_limit = parse_bytes(max_memory) if max_memory is not None else None
    options = dataclasses.replace(options, memory_limit=memory_limit, compile=compile_model)
    check_outscale(outscale)
    native = scale_variant(model, outscale)
    if native is not None:  # one network trained for each scale: its own scale beats a resize
        console.print(f"-s {outscale:g}: using {native}, the x{outscale:g} model of {model}'s family", markup=False)
        model = native
    auto = model == "auto"  # spsr_cli.engine.model_choice.AUTO (not imported here: it imports torch)
    loader = ModelLoader(None if auto else model, offline=offline or None)
    scale = outscale or loader.scale()  # names: _x{real factor}; loads the model only if nothing else tells
    jobs = shard(plan_jobs(inputs, OutputSpec(output=output, suffix=suffix, ext=ext), scale=scale, recursive=recursive))
    started = time.time()
    reports: list[JobReport] = []
    try:
        network = _auto_choice(options, offline=offline or None) if auto else loader
        result = _run(
            jobs, network, options, outscale=outscale, quality=quality, skip_existing=skip_existing, reports=reports
        )
    except KeyboardInterrupt:
        written = sum(r.status == "written" for r in reports)
        raise Interrupted(
            f"{written} of {len(jobs)} images written, {len(reports) - written} skipped or failed; outputs are "
            "written whole or not at all: rerun the same command with --skip-existing to resume"
        ) from None
    _summarise(result, len(jobs))
    if json_path is not None:
        write_record(
            json_path,
            {
                "command": "upscale",
                "started": started,
                "seconds": round(time.time() - started, 3),
                "model": {"name": model, "path": str(loader.path) if loader.path else None, "sha256": loader.sha256},
                **{k: result.settings.get(k) for k in ("device", "precision", "tile")},
                "images": [r.to_json() for r in result.reports],
                "summary": {"written": len(result.done), "skipped": len(result.skipped), "failed": len(result.failed)},
                "exit_code": result.exit_code,
            },
        )
        console.print(f"-> {json_path}")
    raise typer.Exit(result.exit_code)


def _auto_choice(options, *, offline: bool | None):
    """``--model auto``: a function building the per-image :class:`~spsr_cli.engine.model_choice.ModelChoice`
    (called only when some image needs the network)."""

    def build():
        from spsr_cli.engine.model_choice import AUTO, ModelChoice
        from spsr_cli.weights.loader import load_generator
        from spsr_cli.weights.manifest import load_manifest

        return ModelChoice(
            AUTO, options, load=lambda name: load_generator(name, offline=offline), default_name=load_manifest().default
        )

    return build


def _run(jobs: list[Job], loader, options, *, reports: list, **kwargs) -> BatchResult:
    """Run the jobs with a progress display on a terminal, one line per image otherwise."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from spsr_cli.engine.batch import SKIPPED, run_jobs

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    plain = not console.is_terminal
    with Progress(*columns, console=console, transient=True, disable=plain) as progress:
        files = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=1, visible=False)

        def on_start(job: Job) -> None:
            progress.update(files, description=f"images: {job.source.name}")
            progress.reset(tiles, total=1, completed=0, visible=True, description="  tiles")

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        def on_report(report: JobReport) -> None:
            reports.append(report)
            progress.advance(files)
            if report.status == "failed":
                console.print(f"[yellow]{report.source}[/]: failed: {report.reason}")
            elif plain and report.status == "written":
                console.print(_line(report))
            elif report.status == "skipped" and report.reason != SKIPPED:
                console.print(f"[yellow]{report.source}[/]: {report.reason}")

        return run_jobs(jobs, loader, options, on_start=on_start, on_tile=on_tile, on_report=on_report, **kwargs)


def _line(report: JobReport) -> str:
    """``in.png -> out.png, 12x10 -> 48x40, 0.41 s, 1 tile``: one image, for logs."""
    size = lambda wh: f"{wh[0]}x{wh[1]}" if wh else "?"  # noqa: E731
    tiles = f", {report.tiles} tile{'s' if report.tiles != 1 else ''}" if report.tiles else ""
    seconds = f", {report.seconds:.2f} s" if report.seconds is not None else ""
    sizes = f"{size(report.input_size)} -> {size(report.output_size)}"
    return f"{report.source} -> {report.target}, {sizes}{seconds}{tiles}"


def _summarise(result: BatchResult, count: int) -> None:
    reasons = [
        (len(result.skipped) - len(result.busy), "existing, --skip-existing"),
        (len(result.busy), "another process writes them"),
    ]
    detail = "; ".join(f"{n} {why}" for n, why in reasons if n)
    skipped = f"{len(result.skipped)} skipped" + (f" ({detail})" if detail else "")
    console.print(
        f"[green]{len(result.done)} written[/], {skipped}, "
        + (f"[red]{len(result.failed)} failed[/]" if result.failed else "0 failed")
    )
    for job, reason in result.failed:  # the whole list at the end, where a log reader looks
        console.print(f"  [red]failed[/] {job.source}: {reason}")
    if count == 1 and result.done:
        console.print(f"-> {result.done[0].target}")
