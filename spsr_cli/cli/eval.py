"""``spsr eval``: parse options, show progress and a table; the work is in spsr_cli.eval.runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from spsr_cli.cli.common import (
    RUN_PANEL,
    BackendOpt,
    DeviceOpt,
    Fp32Opt,
    OfflineOpt,
    TileOpt,
    TileOverlapOpt,
    console,
    esc,
    inference_options,
    parse_crop,
    stdout,
)
from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.eval.datasets import DatasetSource, get_spec, load_registry, local_source, prepare_dataset

if TYPE_CHECKING:  # torch is imported when the command runs, never for --help
    from spsr_cli.eval.runner import EvalResult

_OUT = "Output"
#: The metric columns of both tables, in the papers' order.
COLUMNS = ("LPIPS", "PSNR (dB)", "SSIM", "NIQE")
_SOURCE = "Images"


def _dataset_help() -> str:
    specs = list(load_registry().values())
    pinned = [s.name for s in specs if s.repo_id and s.revision and s.hr]
    unpinned = [f"{s.name} ({s.repo_id})" for s in specs if s.repo_id and s.hr and not s.revision]
    none = [s.name for s in specs if not (s.repo_id and s.hr)]
    text = f"Benchmark, downloaded from the Hugging Face hub at a pinned commit and verified: {', '.join(pinned)}."
    if unpinned:
        text += f" No verifiable commit known for {', '.join(unpinned)}: give --revision COMMIT, or use --hr-dir."
    if none:
        text += f" No hub source for {', '.join(none)}: use --hr-dir."
    return text + " Sources and revisions: README, section Evaluation."


def eval_command(
    models: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="With --compare: the models to put side by side (names, paths or 'bicubic').", show_default=False
        ),
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", "-d", help=_dataset_help(), rich_help_panel=_SOURCE)
    ] = None,
    hr_dir: Annotated[
        Optional[Path],
        typer.Option("--hr-dir", help="Local folder of HR images (instead of --dataset).", rich_help_panel=_SOURCE),
    ] = None,
    lr_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--lr-dir",
            help="Local folder of LR images paired by name (default: made from HR with MATLAB bicubic).",
            rich_help_panel=_SOURCE,
        ),
    ] = None,
    degradation: Annotated[
        Optional[str],
        typer.Option(
            "--degradation",
            help="Make each LR from HR as a real photo would be: bicubic x4, then blur, noise and JPEG, e.g. "
            "jpeg:50 or jpeg:30,noise:5 (also blur:SIGMA, seed:N); not with --lr-dir. Pipeline: README, section "
            "Evaluation.",
            rich_help_panel=_SOURCE,
        ),
    ] = None,
    revision: Annotated[
        Optional[str],
        typer.Option(
            "--revision",
            help="Hub commit (40 hex) to use instead of the registry's pin, e.g. for a set the registry has none for.",
            rich_help_panel=_SOURCE,
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="Registry name, checkpoint path, or 'bicubic' (the baseline row). Default: the default model.",
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Evaluate every model given as an argument in one run: "
            "`--compare bicubic my-spsr other.safetensors`; one table, the paper's layout.",
        ),
    ] = False,
    protocol: Annotated[
        str, typer.Option("--protocol", help="spsr-paper (MATLAB toolbox of the SPSR paper) or basicsr.")
    ] = "spsr-paper",
    json_path: Annotated[
        Optional[Path],
        typer.Option(
            "--json",
            help="Write means, per-image rows (psnr, ssim, lpips, niqe) and provenance as JSON.",
            rich_help_panel=_OUT,
        ),
    ] = None,
    csv_path: Annotated[
        Optional[Path], typer.Option("--csv", help="Write per-image rows and the mean as CSV.", rich_help_panel=_OUT)
    ] = None,
    save_images: Annotated[
        Optional[Path],
        typer.Option(
            "--save-images",
            help="Folder for the SR images (PNG; one sub-folder per model with --compare) and side-by-side "
            "crops in crops/.",
            rich_help_panel=_OUT,
        ),
    ] = None,
    crop: Annotated[
        Optional[str],
        typer.Option(
            "--crop",
            help="Crop window X,Y,SIZE in HR pixels for --save-images (default: the most detailed 96-pixel window).",
            rich_help_panel=_OUT,
        ),
    ] = None,
    lpips: Annotated[
        bool, typer.Option("--lpips/--no-lpips", help="Compute LPIPS (downloads its weights once).")
    ] = True,
    niqe: Annotated[
        bool, typer.Option("--niqe/--no-niqe", help="Compute NIQE (no-reference; downloads its model once).")
    ] = True,
    trust_unverified: Annotated[
        bool,
        typer.Option(
            "--trust-unverified", help="Also use files neither the hub nor the registry gives a content hash for."
        ),
    ] = False,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: Annotated[
        Optional[str],
        typer.Option(
            "--precision", help="fp32 (default, reproducible), fp16 or bf16 (faster).", rich_help_panel=RUN_PANEL
        ),
    ] = None,
    fp32: Fp32Opt = False,
    backend: BackendOpt = "auto",
    offline: OfflineOpt = False,
) -> None:
    """Measure PSNR / SSIM / LPIPS / NIQE of one or more models on a benchmark at their scale, as the papers' tables do.

    The table goes to stdout, progress and notes to stderr. Exit code 1 if an image failed (the rest are scored).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from spsr_cli.eval.degradation import parse_degradation
    from spsr_cli.eval.metrics import PROTOCOLS
    from spsr_cli.eval.runner import evaluate_many, model_labels, write_csv, write_json

    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol {protocol!r} is not known; use one of: {', '.join(PROTOCOLS)}")
    chosen = _models(model, compare, models)
    window = parse_crop(crop)
    pipeline = None
    if degradation is not None:
        pipeline = parse_degradation(degradation)
        if lr_dir is not None:
            raise UsageError(
                "--degradation makes the LR from HR; drop --lr-dir (or drop --degradation to use those LR images)"
            )
    if crop is not None and save_images is None:
        raise UsageError("--crop goes with --save-images")
    _check_outputs(json_path, csv_path, save_images)
    # Benchmark numbers are reported in float32 unless asked otherwise (reproducible across devices).
    options = inference_options(tile, tile_overlap, device, precision, fp32=fp32 or precision is None, backend=backend)
    source = _source(dataset, hr_dir, lr_dir, revision=revision, offline=offline, trust_unverified=trust_unverified)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    what = ", ".join(model_labels(chosen))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(esc(f"{source.name} ({what})"), total=None)

        def on_image(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=esc(f"{source.name} ({what}): {name}"))

        results = evaluate_many(
            source,
            models=chosen,
            protocol=protocol,
            options=options,
            lpips=lpips,
            niqe=niqe,
            save_images=save_images,
            crop=window,
            progress=on_image,
            offline=offline or None,
            trust_unverified=trust_unverified,
            degradation=pipeline,
        )
    stdout.print(_compare_table(results) if compare else _table(results[0]))
    first = results[0]
    for label, note in (("LPIPS", first.lpips_note), ("NIQE", first.niqe_note)):
        if note and "not requested" not in note:
            console.print(f"[yellow]{label} missing:[/] {esc(note)}")
    for path, write in ((json_path, write_json), (csv_path, write_csv)):
        if path is not None:
            try:
                write(results if compare else first, path)
            except OSError as err:  # e.g. a disk that filled up while scoring: the table above stands
                raise SPSRError(f"cannot write {path}: {err.strerror or err}") from None
            console.print(f"-> {esc(path)}")
    if first.failed:
        console.print(
            f"[red]{len(first.failed)} of {len(first.images)} images could not be evaluated[/] (listed above)"
        )
        raise typer.Exit(1)


def _check_outputs(json_path: Path | None, csv_path: Path | None, save_images: Path | None) -> None:
    """Refuse, before any scoring, output paths that could not be written (usage errors)."""
    from spsr_cli.files import check_output_file, check_output_folder

    for path, option in ((json_path, "--json"), (csv_path, "--csv")):
        if path is not None:
            check_output_file(path, option)
    if json_path is not None and csv_path is not None and json_path.resolve() == csv_path.resolve():
        raise UsageError(f"--json and --csv both name {json_path}; give two files")
    if save_images is not None:
        check_output_folder(save_images, "--save-images")


def _models(model: str | None, compare: bool, models: list[str] | None) -> list[str]:
    if compare:
        if model is not None:
            raise UsageError("--compare takes the models as arguments; drop --model")
        if not models:
            raise UsageError(
                "--compare needs the models to compare, e.g. `spsr eval --dataset Set5 --compare bicubic my-spsr`"
            )
        return list(models)
    if models:
        raise UsageError(
            f"unexpected argument(s) {' '.join(models)}: use --model NAME, or --compare A B ... for several models"
        )
    if model is None:
        from spsr_cli.weights.manifest import load_manifest

        default = load_manifest().default
        if default is None:
            raise UsageError(
                "no default model is installed: give --model NAME|PATH, or --model bicubic for the baseline"
            )
        return [default]
    return [model]


def _source(
    dataset: str | None,
    hr_dir: Path | None,
    lr_dir: Path | None,
    *,
    revision: str | None,
    offline: bool,
    trust_unverified: bool,
) -> DatasetSource:
    if (dataset is None) == (hr_dir is None):
        raise UsageError("give exactly one of --dataset NAME or --hr-dir DIR")
    if hr_dir is None:
        if lr_dir is not None:
            raise UsageError("--lr-dir goes with --hr-dir, not with --dataset")
        return prepare_dataset(
            get_spec(dataset or ""), offline=offline or None, trust_unverified=trust_unverified, revision=revision
        )
    if revision is not None:
        raise UsageError("--revision goes with --dataset, not with --hr-dir")
    for folder in (hr_dir, lr_dir):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{folder} is not a folder")
    return local_source(hr_dir, lr_dir)


def _num(value: float | None, digits: int, bold: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"[bold]{text}[/]" if bold else text


def _lr_note(result: EvalResult) -> str:
    return "" if result.degradation is None else f" (LR: {result.degradation.spec})"


def _table(result: EvalResult) -> Table:
    where = f"{result.dataset['name']} x{result.scale}{_lr_note(result)}"
    table = Table(title=esc(f"{where} - {result.model} - protocol {result.protocol}"))
    table.add_column("image")
    for metric in COLUMNS:  # the --compare table's order too
        table.add_column(metric, justify="right")
    for r in result.images:
        if r.error is not None:
            table.add_row(f"[red]{esc(r.name)}[/]", "[red]failed[/]", "-", "-", "-")
            continue
        table.add_row(esc(r.name), _num(r.lpips, 4), _num(r.psnr, 3), _num(r.ssim, 4), _num(r.niqe, 4))
    means = result.means
    table.add_section()
    table.add_row(
        "[bold]mean[/]",
        _num(means["lpips"], 4, True),
        _num(means["psnr"], 3, True),
        _num(means["ssim"], 4, True),
        _num(means["niqe"], 4, True),
    )
    failed = f", {len(result.failed)} failed" if result.failed else ""
    table.caption = f"{len(result.images) - len(result.failed)} images scored{failed} in {result.seconds:.1f} s"
    for r in result.failed:
        console.print(f"[red]{esc(r.name)}:[/] {esc(r.error)}")
    return table


def _compare_table(results: list[EvalResult]) -> Table:
    """The papers' layout: one row per model, LPIPS / PSNR / SSIM (and NIQE) of the set."""
    first = results[0]
    from spsr_cli.eval.runner import model_labels

    table = Table(title=esc(f"{first.dataset['name']} x{first.scale}{_lr_note(first)} - protocol {first.protocol}"))
    table.add_column("model")
    for metric in COLUMNS:
        table.add_column(metric, justify="right")
    for label, r in zip(model_labels([r.model for r in results]), results):
        means = r.means
        table.add_row(
            esc(label), _num(means["lpips"], 4), _num(means["psnr"], 3), _num(means["ssim"], 4), _num(means["niqe"], 4)
        )
    failed = [r.name for r in first.failed]
    table.caption = f"means over {len(first.images) - len(failed)} images in {first.seconds:.1f} s"
    if failed:
        table.caption += esc(f"; could not be evaluated: {', '.join(failed)}")
        for r in first.failed:
            console.print(f"[red]{esc(r.name)}:[/] {esc(r.error)}")
    return table


__all__ = ["eval_command"]
