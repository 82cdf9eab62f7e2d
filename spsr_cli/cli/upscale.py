"""``spsr upscale``: parse options, show progress, report; the work is in spsr_cli.engine.batch.

Nothing heavy is imported at module level: ``spsr --help`` must not load torch.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from spsr_cli.cli.common import (
    BackendOpt,
    DeviceOpt,
    Fp32Opt,
    Interrupted,
    OfflineOpt,
    PrecisionOpt,
    TileOpt,
    TileOverlapOpt,
    console,
    esc,
    inference_options,
    one_line,
    write_record,
)
from spsr_cli.engine.options import parse_bytes
from spsr_cli.errors import UsageError
from spsr_cli.weights.manifest import scale_variant

if TYPE_CHECKING:
    from spsr_cli.engine.batch import BatchResult, Job, JobReport

_OUT = "Output"
_RUN = "Speed and memory"
_VIDEO = "Video"


def upscale_command(
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders or glob patterns; video files.", show_default=False)
    ],
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
            help="Write a record of the run: per image and video input, output, status, seconds, backend; model, "
            "sha256, device, precision, tile, backend.",
        ),
    ] = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    fp32: Fp32Opt = False,
    backend: BackendOpt = "auto",
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
    video_codec: Annotated[
        Optional[str],
        typer.Option(
            "--video-codec", help="h264, hevc, av1 or vp9 (default: h264; vp9 into WebM).", rich_help_panel=_VIDEO
        ),
    ] = None,
    crf: Annotated[
        Optional[int],
        typer.Option(
            "--crf",
            help="Encoder quality, lower is better (default: h264 18, hevc 20, av1 24, vp9 24).",
            rich_help_panel=_VIDEO,
        ),
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            help="Encoder speed: ultrafast..veryslow (h264, hevc; default medium), 0-13 (av1; 8), 0-8 (vp9; 4).",
            rich_help_panel=_VIDEO,
        ),
    ] = None,
    frames: Annotated[
        Optional[str],
        typer.Option(
            "--frames",
            help="Only frames START:END (from 0, END not included; e.g. 0:48), for a trial.",
            rich_help_panel=_VIDEO,
        ),
    ] = None,
    fps_limit: Annotated[
        Optional[float],
        typer.Option(
            "--fps-limit", help="Upscale at most this many frames per second (drops the rest).", rich_help_panel=_VIDEO
        ),
    ] = None,
) -> None:
    """Super-resolve images and videos: x4 SPSR by default, or any registered model (x2, x3, x4) with --model."""
    from spsr_cli.engine.batch import ModelLoader, OutputSpec, check_outscale, plan_jobs, shard
    from spsr_cli.engine.video import VideoSettings, parse_frames, plan_video_jobs, split_inputs

    options = inference_options(tile, tile_overlap, device, precision, fp32=fp32, backend=backend)
    memory_limit = parse_bytes(max_memory) if max_memory is not None else None
    options = dataclasses.replace(options, memory_limit=memory_limit, compile=compile_model)
    check_outscale(outscale)
    native = scale_variant(model, outscale)
    if native is not None:  # one network trained for each scale: its own scale beats a resize
        console.print(f"-s {outscale:g}: using {native}, the x{outscale:g} model of {model}'s family", markup=False)
        model = native
    videos, rest = split_inputs(inputs)
    video_settings = VideoSettings(
        codec=video_codec, crf=crf, preset=preset, frames=parse_frames(frames), fps_limit=fps_limit
    )
    video_settings.check()
    if not videos and video_settings != VideoSettings():
        raise UsageError(
            "--video-codec, --crf, --preset, --frames and --fps-limit apply to videos; no input is a video"
        )
    if json_path is not None:
        from spsr_cli.files import check_output_file

        check_output_file(json_path, "--json")
    auto = model == "auto"  # spsr_cli.engine.model_choice.AUTO
    loader = ModelLoader(None if auto else model, offline=offline or None)
    scale = outscale or loader.scale()  # names: _x{real factor}; loads the model only if nothing else tells
    spec = OutputSpec(output=output, suffix=suffix, ext=ext)
    jobs = shard(plan_jobs(rest, spec, scale=scale, recursive=recursive)) if rest or not videos else []
    video_jobs = shard(plan_video_jobs(videos, spec, scale=scale, settings=video_settings)) if videos else []
    started = time.time()
    reports: list[JobReport] = []
    video_reports: list = []
    warm = json_path is not None  # a record times images and frames without one-off costs
    network = _auto_choice(options, offline=offline or None, warm_up=warm) if auto else loader
    result = video_result = None
    try:
        if jobs:
            result = _run(
                jobs,
                network,
                options,
                outscale=outscale,
                quality=quality,
                skip_existing=skip_existing,
                reports=reports,
                warm_up=warm,
            )
        if video_jobs:
            video_result = _run_videos(
                video_jobs,
                network,
                options,
                video_settings,
                outscale=outscale,
                skip_existing=skip_existing,
                reports=video_reports,
                warm_up=warm,
            )
    except KeyboardInterrupt:
        written = sum(r.status == "written" for r in reports)
        videos_written = sum(r.status == "written" for r in video_reports)
        done = [f"{written} of {len(jobs)} images"] * bool(jobs) + [
            f"{videos_written} of {len(video_jobs)} videos"
        ] * bool(video_jobs)
        raise Interrupted(
            f"{' and '.join(done)} written; outputs are written whole or not at all (a video cut short is removed "
            "and starts again from its first frame): rerun the same command with --skip-existing to resume"
        ) from None
    if result is not None:
        _summarise(result, len(jobs))
    if video_result is not None:
        _summarise_videos(video_result)
    exit_code = max(result.exit_code if result else 0, video_result.exit_code if video_result else 0)
    if json_path is not None:
        from spsr_cli.engine.records import upscale_record

        described = upscale_record(
            result,
            requested=model,
            module=loader.module,
            auto=auto,
            load_seconds=loader.load_seconds,
            videos=video_result,
        )
        record = {
            "command": "upscale",
            "started": started,
            "seconds": round(time.time() - started, 3),
            **described,
            "summary": {
                "written": len(result.done) if result else 0,
                "skipped": len(result.skipped) if result else 0,
                "failed": len(result.failed) if result else 0,
            },
        }
        if video_result is not None:
            record["video_summary"] = {k: video_result.count(k) for k in ("written", "skipped", "failed")}
        record["exit_code"] = exit_code
        write_record(json_path, record)
        console.print(f"-> {esc(json_path)}")
    raise typer.Exit(exit_code)


def _auto_choice(options, *, offline: bool | None, warm_up: bool = False):
    """``--model auto``: a function building the per-image :class:`~spsr_cli.engine.model_choice.ModelChoice`
    (called only when some image or video needs the network; built once, the images and videos of a run
    share its models)."""

    @functools.cache
    def build():
        from spsr_cli.engine.fast_start import AutoLoader
        from spsr_cli.engine.model_choice import AUTO, ModelChoice
        from spsr_cli.weights.manifest import load_manifest_json

        return ModelChoice(
            AUTO,
            options,
            load=AutoLoader(options, offline=offline, warm_up=warm_up),
            default_name=load_manifest_json()[1],
            warm_up=warm_up,
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
    position = {id(job): i for i, job in enumerate(jobs)}
    finished = [0]  # images done: every image before the one starting (its write may still be in flight)

    with Progress(*columns, console=console, transient=True, disable=plain) as progress:
        files = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def count(done: int) -> None:
            finished[0] = max(finished[0], done)
            progress.update(files, completed=finished[0])

        def on_start(job: Job) -> None:
            count(position.get(id(job), 0))
            progress.update(files, description=f"images: {esc(job.source.name)}")
            # the tile count is known after the first tile: no "0/1" until then
            progress.reset(tiles, total=None, completed=0, visible=True, description="  tiles")

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        def on_report(report: JobReport) -> None:
            reports.append(report)
            count(len(reports))
            if report.status == "failed":
                console.print(f"[yellow]{esc(one_line(report.source))}[/]: failed: {esc(report.reason)}")
            elif plain and report.status == "written":
                console.print(esc(_line(report)))
            elif report.status == "skipped" and report.reason != SKIPPED:
                console.print(f"[yellow]{esc(one_line(report.source))}[/]: {esc(report.reason)}")

        return run_jobs(jobs, loader, options, on_start=on_start, on_tile=on_tile, on_report=on_report, **kwargs)


def _run_videos(jobs: list[Job], loader, options, settings, *, reports: list, **kwargs):
    """Run the video jobs: a frames bar (frames per second, time left) on a terminal, else one line per video."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from spsr_cli.engine.video import run_video_jobs

    plain = not console.is_terminal
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames, {task.fields[fps]} fps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=plain) as progress:
        task = progress.add_task("video", total=None, fps="-")
        clock = {"t0": time.perf_counter()}

        def on_start(job: Job, frames: int | None) -> None:
            clock["t0"] = time.perf_counter()
            progress.reset(task, total=frames, completed=0, description=f"video: {esc(job.source.name)}", fps="-")

        def on_frame(done: int, total: int) -> None:
            elapsed = time.perf_counter() - clock["t0"]
            fps = f"{done / elapsed:.2f}" if elapsed > 0 else "-"
            progress.update(task, completed=done, total=total, fps=fps)

        def on_report(report) -> None:
            reports.append(report)
            if report.status == "failed":
                console.print(f"[yellow]{esc(one_line(report.source))}[/]: failed: {esc(report.reason or '')}")
            elif plain and report.status == "written":
                console.print(esc(_video_line(report)))

        return run_video_jobs(
            jobs, loader, options, settings, on_start=on_start, on_frame=on_frame, on_report=on_report, **kwargs
        )


def _video_line(report) -> str:
    """``clip.mp4 -> clip_x4.mp4, 64x48 -> 256x192, 48 frames, 6.40 fps, 7.50 s, video h264 -> h264 (crf 18),
    audio aac copied``: one video, for logs."""
    size = lambda wh: f"{wh[0]}x{wh[1]}" if wh else "?"  # noqa: E731
    codecs = ", ".join(
        f"{kind} {'; '.join(note) if isinstance(note, list) else note}" for kind, note in report.codecs.items()
    )
    fps = f", {report.fps:.2f} fps" if report.fps else ""
    return (
        f"{one_line(report.source)} -> {one_line(report.target)}, {size(report.input_size)} -> "
        f"{size(report.output_size)}, "
        f"{report.frames} frames{fps}, {report.seconds:.2f} s, {codecs}"
    )


def _summarise_videos(result) -> None:
    failed = result.count("failed")
    console.print(
        f"videos: [green]{result.count('written')} written[/], {result.count('skipped')} skipped, "
        + (f"[red]{failed} failed[/]" if failed else "0 failed")
    )
    for report in result.reports:
        if report.status == "failed":
            console.print(f"  [red]failed[/] {esc(one_line(report.source))}: {esc(report.reason or '')}")
    written = [r for r in result.reports if r.status == "written"]
    if len(result.reports) == 1 and written:
        console.print(f"-> {esc(written[0].target)}")


def _line(report: JobReport) -> str:
    """``in.png -> out.png, 12x10 -> 48x40, 0.41 s, 1 tile``: one image, for logs."""
    size = lambda wh: f"{wh[0]}x{wh[1]}" if wh else "?"  # noqa: E731
    tiles = f", {report.tiles} tile{'s' if report.tiles != 1 else ''}" if report.tiles else ""
    seconds = f", {report.seconds:.2f} s" if report.seconds is not None else ""
    sizes = f"{size(report.input_size)} -> {size(report.output_size)}"
    return f"{one_line(report.source)} -> {one_line(report.target)}, {sizes}{seconds}{tiles}"


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
        console.print(f"  [red]failed[/] {esc(one_line(job.source))}: {esc(reason)}")
    if count == 1 and result.done:
        console.print(f"-> {esc(result.done[0].target)}")
