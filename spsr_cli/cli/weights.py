"""``spsr weights list|download|import|rm``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from spsr_cli.cli.common import OfflineOpt, console, esc, stdout

weights_app = typer.Typer(help="List, download, import and remove (cached) model weights.", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


#: The tab-separated columns of a piped ``spsr weights list``, one row per model (README, "spsr weights").
PIPED_MODEL_COLUMNS = (
    "model",
    "name",
    "scale",
    "source",
    "cached",
    "size",
    "on disk",
    "architecture",
    "for",
    "licence",
    "cost",
    "sha256",
)
#: ... and one row per auxiliary entry.
PIPED_AUXILIARY_COLUMNS = ("auxiliary", "name", "kind", "licence", "on disk", "sha256")


@weights_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show every known model: what photos it is for, architecture, licence, cost, source, what is cached
    and how big (one tab-separated row per model when piped)."""
    from spsr_cli.weights.auxiliary import auxiliary_entries
    from spsr_cli.weights.cache import cache_report
    from spsr_cli.weights.loader import cache_status
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    if manifest.local_error:
        console.print(f"[yellow]warning:[/] {esc(manifest.local_error)}")
    status = {name: cache_status(entry) for name, entry in manifest.models.items()}
    auxiliary = auxiliary_entries(manifest)
    cache = cache_report(manifest)
    if as_json:
        rows = [
            {
                **entry.to_json(),
                "origin": entry.origin,
                "default": entry.name == manifest.default,
                "cached": status[entry.name] == "yes",
                "damaged": status[entry.name] == "damaged",
                "gmacs_per_megapixel": round(entry.gmacs_per_megapixel, 1),
                "cache": _cache_json(cache, entry.name),
            }
            for entry in manifest.models.values()
        ]
        aux_rows = [{**entry.to_json(), "cache": _cache_json(cache, name)} for name, entry in auxiliary.items()]
        totals = {
            "root": str(cache.root),
            "bytes": cache.total,
            **{f"{k}_bytes": v for k, v in cache.by_kind().items()},
        }
        stdout.print_json(json.dumps({"models": rows, "auxiliary": aux_rows, "cache": totals}))
        return
    if not stdout.is_terminal:  # piped: plain rows, nothing cut or wrapped
        for entry in manifest.models.values():
            row = {
                "model": "model",
                "name": _label(entry, manifest.default),
                "scale": f"x{entry.scale}",
                "source": entry.source.describe(),
                "cached": f"cached: {status[entry.name]}",
                "size": _size(entry.size),
                "architecture": entry.architecture,
                "for": entry.good_for or entry.description,
                "licence": entry.licence,
                "cost": _cost(entry),
                "sha256": entry.sha256,
                "on disk": _on_disk(cache.bytes_of(entry.name)),
            }
            typer.echo("\t".join(_one_line(row[column]) for column in PIPED_MODEL_COLUMNS))
        for name, entry in auxiliary.items():
            row = {
                "auxiliary": "auxiliary",
                "name": name,
                "kind": entry.kind,
                "licence": entry.licence,
                "sha256": _pins(entry),
                "on disk": _on_disk(cache.bytes_of(name)),
            }
            typer.echo("\t".join(_one_line(row[column]) for column in PIPED_AUXILIARY_COLUMNS))
        return
    table = Table(title="Models (`spsr upscale --model NAME`; --model auto picks per photo)", show_lines=False)
    table.add_column("name", no_wrap=True)
    for column in ("for", "architecture", "licence", "cost per output MP", "source", "cached", "size", "on disk"):
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
            _on_disk(cache.bytes_of(entry.name)),
        )
    if not manifest.models:
        table.caption = "No models yet: import one with `spsr weights import FILE --name NAME`."
    else:
        table.caption = "sha256 and every other field: `spsr weights list --json`"
    stdout.print(table)
    if auxiliary:
        aux = Table(title="Auxiliary weights (metrics, losses)")
        for column in ("name", "purpose", "licence", "sha256 (per source)", "on disk"):
            aux.add_column(column, overflow="fold")
        for name, entry in auxiliary.items():
            aux.add_row(esc(name), esc(entry.kind), esc(entry.licence), _pins(entry), _on_disk(cache.bytes_of(name)))
        stdout.print(aux)
    kinds = cache.by_kind()
    unused = f"; {_size(kinds['unused'])} used by no entry" if kinds["unused"] else ""
    stdout.print(
        esc(
            f"Cache: {_size(cache.total)} in {cache.root} ({_size(kinds['download'])} downloads, "
            f"{_size(kinds['conversion'])} conversions{unused}); free it with `spsr weights rm NAME|--all` "
            "(--downloads: the archives only)"
        )
    )


def _on_disk(size: int) -> str:
    """A cached entry's bytes on disk, "-" for none."""
    return _size(size) if size else "-"


def _one_line(text: str) -> str:
    """A piped column: no tab or newline inside it."""
    return " ".join(str(text).split())


def _cache_json(cache, name: str) -> dict:
    files = cache.of(name)
    return {
        "bytes": sum(f.size for f in files),
        "files": [
            {"path": str(f.path), "kind": f.kind, "bytes": f.size, "shared_with": [n for n in f.names if n != name]}
            for f in files
        ],
    }


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


@weights_app.command("rm")
def rm_command(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Model or auxiliary names (`spsr weights list`).", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every cached file, those no entry uses too.")] = False,
    downloads: Annotated[
        bool, typer.Option("--downloads", help="Only downloaded archives; converted models stay and keep working.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
) -> None:
    """Remove cached downloads and conversions, OpenVINO's too (they come back on the next use or
    `spsr weights download`). Models that ship with spsr-cli, local models and training runs are never
    touched (OpenVINO's conversions of them are caches)."""
    from spsr_cli.errors import UsageError
    from spsr_cli.weights.cache import remove_cached

    if bool(names) == all_:
        raise UsageError("give the names to remove (`spsr weights list` shows them) or --all, not both")
    result = remove_cached(None if all_ else names, dry_run=dry_run, downloads_only=downloads)
    verb = "would remove" if dry_run else "removed"
    for cached in result.removed:
        console.print(esc(f"{verb} {cached.path} ({_size(cached.size)}, {cached.kind})"))
    for cached, others in result.kept:
        console.print(esc(f"kept {cached.path} ({_size(cached.size)}): {', '.join(others)} still use it"))
    if not result.removed:
        console.print("nothing cached to remove")
    elif dry_run:
        console.print(f"would free {_size(result.freed)} (dry run: nothing was removed)")
    else:
        console.print(f"[green]freed {_size(result.freed)}[/]")
