"""``spsr train``: run / resume training, ``export`` a run, ``fetch-init`` pretrained RRDB weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spsr_cli.cli.common import OfflineOpt, console, esc
from spsr_cli.errors import UsageError
from spsr_cli.files import check_output_folder

train_app = typer.Typer(
    help="Train SPSR generators: spsr train --config FILE --out RUN_DIR (see configs/).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@train_app.callback(invoke_without_command=True)
def train_command(
    ctx: typer.Context,
    config: Annotated[
        Optional[str],
        typer.Option(
            "--config",
            "-c",
            help="A shipped config by name (spsr-x4, spsr-x4-cpu, tiny-cpu, ...) or a YAML/TOML file.",
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Run folder: config, logs and checkpoints go here.")
    ] = None,
    overrides: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a config value, e.g. --set train.lr=2e-4 (repeatable)."),
    ] = None,
    stage: Annotated[
        Optional[str], typer.Option("--stage", help="psnr (pixel + branch L1 warm-up) or gan (full SPSR objective).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init", help="Start from: RRDB/ESRGAN/Real-ESRGAN weights, an SPSR generator file, or a run folder."
        ),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config (the defaults without --config) and exit.")
    ] = False,
) -> None:
    """Train (or resume) a run; without --config, --print-config shows the defaults."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None and out is None and not print_config:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)  # a usage error, as bare `spsr` and `spsr weights`
    from spsr_cli.train.config import dump_yaml, load_config, resolve_run_config
    from spsr_cli.train.shipped import resolve_config

    config_path = resolve_config(config) if config is not None else None
    extra = list(overrides or [])
    if stage is not None:
        extra.append(f"train.stage={stage}")
    if init is not None:
        extra.append(f"train.init={init}")
    if print_config:
        cfg = load_config(config_path, extra)
        typer.echo(dump_yaml(cfg), nl=False)
        return
    if out is None:
        raise UsageError("--out RUN_DIR is required (the folder for the run's config, logs and checkpoints)")
    check_output_folder(out, "--out")
    cfg = resolve_run_config(config_path=config_path, overrides=extra, run_dir=out, resume=resume)
    from spsr_cli.train.loop import train

    result = train(cfg, out, resume=resume)
    if result.rank != 0:  # under torchrun only rank 0 reports
        return
    if result.checkpoint is None and resume:
        from spsr_cli.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(out)
        if latest is not None:
            console.print(
                f"the run in {esc(out)} had already finished (step {result.step} of train.steps={cfg.train.steps}); "
                f"nothing to train. Its newest checkpoint is {esc(latest)}. To train further, pass a larger "
                f"--set train.steps=N with --resume."
            )
            console.print(f"export with: spsr train export {esc(out)} --name NAME")
            return
    latest = esc(result.checkpoint or "none written")
    console.print(f"[green]trained[/] {result.step} steps; latest checkpoint: {latest}")
    console.print(f"export with: spsr train export {esc(out)} --name NAME")


@train_app.command("export")
def export_command(
    run: Annotated[Path, typer.Argument(help="Run folder (newest checkpoint) or a checkpoint file.")],
    name: Annotated[str, typer.Option("--name", help="Model name for spsr upscale --model NAME.")],
    raw: Annotated[bool, typer.Option("--raw", help="Export the raw generator instead of its EMA copy.")] = False,
    licence: Annotated[Optional[str], typer.Option("--licence", help="Licence recorded with the weights.")] = None,
    description: Annotated[str, typer.Option("--description", help="Free text for the manifest entry.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace a local model of the same name.")] = False,
) -> None:
    """Write the run's generator as float16 safetensors and register it locally
    (an NSE run: its float32 structure extractor)."""
    from spsr_cli.train.export import export_run

    result = export_run(run, name=name, use_ema=not raw, licence=licence, description=description, replace=force)
    if result.weights == "nse":
        console.print(
            f"[green]exported[/] structure extractor {esc(result.name)} (step {result.step}) -> {esc(result.path)}\n"
            f"sha256 {result.sha256}; use it with: spsr train --set loss.preset="
            f"{'spsr-j' if result.entry.metadata['method'] == 'jigsaw' else 'spsr-p'} --set loss.nse={esc(result.name)}"
        )
        return
    console.print(
        f"[green]exported[/] {esc(result.name)} (step {result.step}, {result.weights}) -> {esc(result.path)}\n"
        f"sha256 {result.sha256}; use it with: spsr upscale IMAGE --model {esc(result.name)}"
    )


@train_app.command("fetch-init")
def fetch_init_command(
    source: Annotated[
        str, typer.Option("--source", help="RRDBNet to start from: realsr-df2k (default) or realesrgan-x4plus.")
    ] = "realsr-df2k",
    offline: OfflineOpt = False,
) -> None:
    """Download and convert a pretrained RRDBNet for --init (an exact warm start); prints the file's path."""
    from spsr_cli.weights.ncnn import fetch_rrdb_init

    path = fetch_rrdb_init(source, offline=offline)
    typer.echo(str(path))


@train_app.command("nse")
def nse_command(
    method: Annotated[
        Optional[str], typer.Option("--method", help="contrastive (NSE-P) or jigsaw (NSE-J); overrides task.method.")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Run folder: config, logs and checkpoints go here.")
    ] = None,
    config: Annotated[
        Optional[str],
        typer.Option("--config", "-c", help="A shipped NSE config by name (nse-contrastive, ...) or a YAML/TOML file."),
    ] = None,
    overrides: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a config value, e.g. --set train.steps=500 (repeatable)."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
) -> None:
    """Train a neural structure extractor (SPSR-P / SPSR-J's loss network) by self-supervision."""
    from spsr_cli.train import load_nse_config, train_nse
    from spsr_cli.train.shipped import resolve_config

    if out is None:
        raise UsageError("--out RUN_DIR is required (the folder for the run's config, logs and checkpoints)")
    check_output_folder(out, "--out")
    extra = list(overrides or []) + ([f"task.method={method}"] if method is not None else [])
    config_path = resolve_config(config) if config is not None else None
    if config_path is None and resume and (out / "config.yaml").is_file():
        config_path = out / "config.yaml"
    cfg = load_nse_config(config_path, extra)
    result = train_nse(cfg, out, resume=resume)
    accuracy = f"; held-out accuracy {result.evaluation[-1]['accuracy']:.4f}" if result.evaluation else ""
    console.print(
        f"[green]trained[/] {cfg.task.method} NSE to step {result.step} "
        f"({result.train_seconds / 60:.1f} min of training){accuracy}"
    )
    console.print(f"export with: spsr train export {esc(out)} --name NAME")
