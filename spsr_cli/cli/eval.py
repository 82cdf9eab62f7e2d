"""``spsr eval``: parse options, show progress and a table; the work is in spsr_cli.eval.runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from spsr_cli.cli.common import DeviceOpt, OfflineOpt, PrecisionOpt, TileOpt, TileOverlapOpt, console, inference_options
from spsr_cli.errors import UsageError
from spsr_cli.eval.datasets import DatasetSource, get_spec, local_source, prepare_dataset
from spsr_cli.eval.metrics import PROTOCOLS
from spsr_cli.eval.runner import EvalResult, evaluate, write_csv, write_json


def eval_command(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Benchmark: Set5, Set14, BSD100, Urban100, Manga109, General100, DIV2K-val.")] = None,
    hr_dir: Annotated[Optional[Path], typer.Option("--hr-dir", help="Local folder of HR images (instead of --dataset).")] = None,
    lr_dir: Annotated[Optional[Path], typer.Option("--lr-dir", help="Local folder of LR images paired by name (default: made from HR with MATLAB bicubic).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Registry name, checkpoint path, or 'bicubic' (the baseline row).")] = "bicubic",
    protocol: Annotated[str, typer.Option("--protocol", help="spsr-paper (MATLAB toolbox of the SPSR paper) or basicsr.")] = "spsr-paper",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write means, per-image rows and provenance as JSON.")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write per-image rows and the mean as CSV.")] = None,
    save_images: Annotated[Optional[Path], typer.Option("--save-images", help="Folder for the SR images (PNG).")] = None,
    lpips: Annotated[bool, typer.Option("--lpips/--no-lpips", help="Compute LPIPS (downloads its weights once).")] = True,
    trust_unverified: Annotated[bool, typer.Option("--trust-unverified", help="Also use registry files whose sha256 is not pinned yet.")] = False,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = 16,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Measure PSNR / SSIM / LPIPS of a model on a x4 benchmark, as the papers' tables do."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol {protocol!r} is not known; use one of: {', '.join(PROTOCOLS)}")
    options = inference_options(tile, tile_overlap, device, precision)
    source = _source(dataset, hr_dir, lr_dir, offline=offline, trust_unverified=trust_unverified)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{source.name} ({model})", total=None)

        def on_image(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{source.name} ({model}): {name}")

        result = evaluate(
            source, model=model, protocol=protocol, options=options, lpips=lpips, save_images=save_images,
            progress=on_image, offline=offline or None, trust_unverified=trust_unverified,
        )
    console.print(_table(result))
    if result.lpips_note:
        console.print(f"[yellow]LPIPS missing:[/] {result.lpips_note}")
    if json_path is not None:
        write_json(result, json_path)
        console.print(f"-> {json_path}")
    if csv_path is not None:
        write_csv(result, csv_path)
        console.print(f"-> {csv_path}")


def _source(
    dataset: str | None, hr_dir: Path | None, lr_dir: Path | None, *, offline: bool, trust_unverified: bool
) -> DatasetSource:
    if (dataset is None) == (hr_dir is None):
        raise UsageError("give exactly one of --dataset NAME or --hr-dir DIR")
    if hr_dir is None:
        if lr_dir is not None:
            raise UsageError("--lr-dir goes with --hr-dir, not with --dataset")
        return prepare_dataset(get_spec(dataset or ""), offline=offline or None, trust_unverified=trust_unverified)
    for folder in (hr_dir, lr_dir):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{folder} is not a folder")
    return local_source(hr_dir, lr_dir)


def _table(result: EvalResult) -> Table:
    table = Table(title=f"{result.dataset['name']} x{result.scale} - {result.model} - protocol {result.protocol}")
    table.add_column("image")
    for metric in ("PSNR (dB)", "SSIM", "LPIPS"):
        table.add_column(metric, justify="right")
    for r in result.images:
        table.add_row(r.name, f"{r.psnr:.3f}", f"{r.ssim:.4f}", "-" if r.lpips is None else f"{r.lpips:.4f}")
    means = result.means
    table.add_section()
    table.add_row(
        "[bold]mean[/]",
        "-" if means["psnr"] is None else f"[bold]{means['psnr']:.3f}[/]",
        "-" if means["ssim"] is None else f"[bold]{means['ssim']:.4f}[/]",
        "-" if means["lpips"] is None else f"[bold]{means['lpips']:.4f}[/]",
    )
    table.caption = f"{len(result.images)} images in {result.seconds:.1f} s"
    return table


__all__ = ["eval_command"]
