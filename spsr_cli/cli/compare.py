"""``spsr compare``: parse options, show progress, report; the work is in spsr_cli.eval.compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spsr_cli.cli.common import (
    BackendOpt,
    DeviceOpt,
    OfflineOpt,
    PrecisionOpt,
    TileOpt,
    TileOverlapOpt,
    console,
    esc,
    inference_options,
    parse_crop,
)
from spsr_cli.errors import UsageError


def compare_command(
    photos: Annotated[
        list[str],
        typer.Argument(help="Photos (image files), folders of them, or videos (see --at).", show_default=False),
    ],
    models: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            "-m",
            help="A model to run: registry name, weights path or 'bicubic'. Give it once per model.",
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Folder for index.html, the crops and the outputs (created).",
        ),
    ] = None,
    crop: Annotated[
        Optional[str],
        typer.Option(
            "--crop",
            help="The crop strip's first window X,Y,SIZE in input-photo pixels (default: the most detailed "
            "64-pixel window; on the page a click moves it).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace files an earlier comparison left in the folder (other files are never touched).",
        ),
    ] = False,
    at: Annotated[
        Optional[float],
        typer.Option("--at", help="For a video: compare its frame at this many seconds from the start (default 0)."),
    ] = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    backend: BackendOpt = "auto",
    offline: OfflineOpt = False,
) -> None:
    """Run several models on your own photos: a labelled side-by-side crop per photo and one offline
    page (index.html): per photo a viewer with two pickers (the input or any model) over one before/after
    line, shared zoom and pan, a crop strip of every model, and each model's time after warm-up."""
    from spsr_cli.eval.compare import compare_photos  # imports torch: only when the command runs

    if not models:
        raise UsageError("give the models to compare with --model, e.g. --model bicubic --model spsr-x4")
    if output is None:
        raise UsageError("give the output folder with -o DIR (it is created)")
    window = parse_crop(crop)
    options = inference_options(tile, tile_overlap, device, precision, backend=backend)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("photos", total=None)

        def on_photo(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"photos: {esc(name)}")

        result = compare_photos(
            photos,
            models,
            output,
            options=options,
            crop=window,
            force=force,
            offline=offline or None,
            progress=on_photo,
            at=at,
        )
    for photo in result.photos:
        if photo.error is None:
            times = ", ".join(
                f"{o.label} {o.seconds:.2f} s ({o.seconds_per_megapixel or 0:.2f} s/MP)" for o in photo.outputs
            )
            console.print(esc(f"{photo.name}: {times}"))
        else:
            console.print(f"[red]{esc(photo.source)}:[/] {esc(photo.error)}")
    ok = len(result.photos) - len(result.failed)
    failed = f", [red]{len(result.failed)} failed[/]" if result.failed else ""
    console.print(f"[green]{ok} photo{'s' if ok != 1 else ''} compared[/]{failed}")
    console.print(f"-> {esc(result.index)}")
    raise typer.Exit(1 if result.failed else 0)


__all__ = ["compare_command"]
