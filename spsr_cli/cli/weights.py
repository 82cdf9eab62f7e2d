"""``spsr weights list|download|import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from spsr_cli.cli.common import OfflineOpt, console, esc, stdout

weights_app = typer.Typer(help="List, download and import model weights.", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@weights_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show every known model: what photos it is for, architecture, licence, cost, source, cached or not
    (one tab-separated row per model when piped)."""
    from spsr_cli.weights.auxiliary import auxiliary_entries
    from spsr_cli.weights.loader import cache_status
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    if manifest.local_error:
        console.print(f"[yellow]warning:[/] {esc(manifest.local_error)}")
    status = {name: cache_status(entry) for name, entry in manifest.models.items()}
    auxiliary = auxiliary_entries(manifest)
    if as_json:
        rows = [
            {
                **entry.to_json(),
                "origin": entry.origin,
                "default": entry.name == manifest.default,
                "cached": status[entry.name] == "yes",
                "damaged": status[entry.name] == "damaged",
                "gmacs_per_megapixel": round(entry.gmacs_per_megapixel, 1),
            }
            for entry in manifest.models.values()
        ]
        aux_rows = [entry.to_json() for entry in auxiliary.values()]
        stdout.print_json(json.dumps({"models": rows, "auxiliary": aux_rows}))
        return
    if not stdout.is_terminal:  # piped: plain rows, nothing cut or wrapped
        for entry in manifest.models.values():
            typer.echo(
                "\t".join(
                    [
                        "model",
                        _label(entry, manifest.default),
                        f"x{entry.scale}",
                        entry.source.describe(),
                        f"cached: {status[entry.name]}",
                        _size(entry.size),
                        entry.architecture,
                        entry.good_for or entry.description,
                        entry.licence,
                        _cost(entry),
                        entry.sha256,
                    ]
                )
            )
        for name, entry in auxiliary.items():
            typer.echo("\t".join(["auxiliary", name, entry.kind, entry.licence, _pins(entry)]))
        return
    table = Table(title="Models (`spsr upscale --model NAME`; --model auto picks per photo)", show_lines=False)
    table.add_column("name", no_wrap=True)
    for column in ("for", "architecture", "licence", "cost per output MP", "source", "cached", "size"):
        table.add_column(column, overflow="fold")
    for entry in manifest.models.values():
        cached = {"damaged": "[red]damaged (sha256 mismatch)[/]"}.get(status[entry.name], status[entry.name])
        table.add_row(
            esc(_label(entry, manifest.default)),
            esc(entry.good_for or entry.description),
            f"{entry.architecture} x{entry.scale}",
            esc(entry.licence),
            _cost(entry),
            esc(entry.source.describe()),
            cached,
            _size(entry.size),
        )
    if not manifest.models:
        table.caption = "No models yet: import one with `spsr weights import FILE --name NAME`."
    else:
        table.caption = "sha256 and every other field: `spsr weights list --json`"
    stdout.print(table)
    if auxiliary:
        aux = Table(title="Auxiliary weights (metrics, losses)")
        for column in ("name", "purpose", "licence", "sha256 (per source)"):
            aux.add_column(column, overflow="fold")
        for name, entry in auxiliary.items():
            aux.add_row(esc(name), esc(entry.kind), esc(entry.licence), _pins(entry))
        stdout.print(aux)


def _label(entry, default: str | None) -> str:
    """``spsr-x4 v1 (default)``: the name, the version of a re-shipped model, the default mark."""
    version = f" v{entry.version}" if entry.version else ""
    return entry.name + version + (" (default)" if entry.name == default else "")


def _cost(entry) -> str:
    """Compute per output megapixel, and the measured time where the registry records one."""
    timed = (
        "; ".join(f"{s:.2f} s on {where}" for where, s in entry.seconds_per_megapixel.items()) or "time not measured"
    )
    return f"{entry.gmacs_per_megapixel:,.0f} GMAC; {timed}"


def _pins(entry) -> str:
    return " / ".join(p if p else "unpinned" for p in entry.sha256_pins())


@weights_app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="A model or auxiliary name from `spsr weights list`.")],
    offline: OfflineOpt = False,
) -> None:
    """Fetch a model (converting it where it ships in another format) or auxiliary weights, verifying sha256s."""
    from spsr_cli.weights.auxiliary import auxiliary_entries, fetch_auxiliary
    from spsr_cli.weights.loader import ensure_model_file
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    if name in manifest.models or name not in auxiliary_entries(manifest):
        path = ensure_model_file(manifest.get(name), offline=offline or None)
        console.print(f"[green]{esc(name)}[/] ready: {esc(path)}")
        return
    where = fetch_auxiliary(name, offline=offline, manifest=manifest)
    console.print(f"[green]{esc(name)}[/] ready: {esc(where)}")


@weights_app.command("import")
def import_command(
    file: Annotated[
        Path, typer.Argument(help="Checkpoint (.pth or .safetensors) to convert.", exists=True, dir_okay=False)
    ],
    name: Annotated[str, typer.Option("--name", help="Name to register it under.")],
    licence: Annotated[str, typer.Option("--licence", help="Licence of the weights.")] = "unknown",
    source: Annotated[
        Optional[str], typer.Option("--source", help="Where the weights came from (URL, paper, ...).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a local model of the same name.")] = False,
) -> None:
    """Convert a checkpoint to safetensors (strictly checked) and register it locally."""
    from spsr_cli.weights.store import import_checkpoint

    entry = import_checkpoint(file, name=name, source=source, licence=licence, replace=force)
    console.print(
        f"[green]imported[/] {esc(entry.name)} (x{entry.scale}, sha256 {entry.sha256[:16]}...) -> "
        + esc(entry.source.describe())
    )
