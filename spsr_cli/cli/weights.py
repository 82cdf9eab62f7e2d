"""``spsr weights list|download|import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from spsr_cli.cli.common import OfflineOpt, console, stdout

weights_app = typer.Typer(help="List, download and import model weights.", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@weights_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show every known model: source, cached or not, size and sha256 (one tab-separated row per model when piped)."""
    from spsr_cli.weights.auxiliary import auxiliary_entries
    from spsr_cli.weights.loader import cache_status
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    if manifest.local_error:
        console.print(f"[yellow]warning:[/] {manifest.local_error}")
    status = {name: cache_status(entry) for name, entry in manifest.models.items()}
    auxiliary = auxiliary_entries(manifest)
    if as_json:
        rows = [
            {**entry.to_json(), "origin": entry.origin, "default": entry.name == manifest.default,
             "cached": status[entry.name] == "yes", "damaged": status[entry.name] == "damaged"}
            for entry in manifest.models.values()
        ]
        aux_rows = [entry.to_json() for entry in auxiliary.values()]
        stdout.print_json(json.dumps({"models": rows, "auxiliary": aux_rows}))
        return
    if not stdout.is_terminal:  # piped: plain rows, nothing cut or wrapped
        for entry in manifest.models.values():
            typer.echo("\t".join(["model", _label(entry, manifest.default), f"x{entry.scale}", entry.source.describe(),
                                  f"cached: {status[entry.name]}", _size(entry.size), entry.sha256]))
        for name, entry in auxiliary.items():
            typer.echo("\t".join(["auxiliary", name, entry.kind, entry.licence, _pins(entry)]))
        return
    table = Table(title="SPSR models", show_lines=False)
    for column in ("name", "scale", "source", "cached", "size", "sha256"):
        table.add_column(column, overflow="fold")
    for entry in manifest.models.values():
        cached = {"damaged": "[red]damaged (sha256 mismatch)[/]"}.get(status[entry.name], status[entry.name])
        table.add_row(_label(entry, manifest.default), f"x{entry.scale}", entry.source.describe(), cached,
                      _size(entry.size), entry.sha256)
    if not manifest.models:
        table.caption = "No models yet: import one with `spsr weights import FILE --name NAME`."
    stdout.print(table)
    if auxiliary:
        aux = Table(title="Auxiliary weights (metrics, losses)")
        for column in ("name", "purpose", "licence", "sha256 (per source)"):
            aux.add_column(column, overflow="fold")
        for name, entry in auxiliary.items():
            aux.add_row(name, entry.kind, entry.licence, _pins(entry))
        stdout.print(aux)


def _label(entry, default: str | None) -> str:
    """``spsr-x4 v1 (default)``: the name, the version of a re-shipped model, the default mark."""
    version = f" v{entry.version}" if entry.version else ""
    return entry.name + version + (" (default)" if entry.name == default else "")


def _pins(entry) -> str:
    return " / ".join(p if p else "unpinned" for p in entry.sha256_pins())


@weights_app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="A model or auxiliary name from `spsr weights list`.")],
    offline: OfflineOpt = False,
) -> None:
    """Fetch a model (or auxiliary weights: LPIPS, VGG, init) and verify its sha256."""
    from spsr_cli.weights.auxiliary import auxiliary_entries, fetch_auxiliary
    from spsr_cli.weights.loader import ensure_model_file
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    if name in manifest.models or name not in auxiliary_entries(manifest):
        path = ensure_model_file(manifest.get(name), offline=offline or None)
        console.print(f"[green]{name}[/] ready: {path}")
        return
    where = fetch_auxiliary(name, offline=offline, manifest=manifest)
    console.print(f"[green]{name}[/] ready: {where}")


@weights_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Checkpoint (.pth or .safetensors) to convert.", exists=True, dir_okay=False)],
    name: Annotated[str, typer.Option("--name", help="Name to register it under.")],
    licence: Annotated[str, typer.Option("--licence", help="Licence of the weights.")] = "unknown",
    source: Annotated[Optional[str], typer.Option("--source", help="Where the weights came from (URL, paper, ...).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a local model of the same name.")] = False,
) -> None:
    """Convert a checkpoint to safetensors (strictly checked) and register it locally."""
    from spsr_cli.weights.store import import_checkpoint

    entry = import_checkpoint(file, name=name, source=source, licence=licence, replace=force)
    console.print(f"[green]imported[/] {entry.name} (x{entry.scale}, sha256 {entry.sha256[:16]}...) -> {entry.source.describe()}")
