"""``spsr upscale clip.mp4``: every frame of a video through the engine, the container around it kept.

One video runs as three stages on three threads, as folders of images do
(:mod:`spsr_cli.engine.pipeline`): a :class:`~spsr_cli.engine.pipeline.Prefetcher` demuxes,
decodes and converts frames to RGB ahead of the network; the caller's thread runs each frame
through :func:`~spsr_cli.engine.pipeline.upscale_image` with the run's
:class:`~spsr_cli.engine.tiling.Upscaler` (any model, backend, precision and tile, the same memory
check); a :class:`~spsr_cli.engine.pipeline.WriteBehind` converts each result to YUV, encodes and
muxes it, with the copied audio and subtitle packets in their file order. Both queues are short
(:data:`DECODE_AHEAD`, :data:`ENCODE_BEHIND`), so a few frames are in flight whatever the
clip's length (:attr:`VideoReport.max_in_flight` counts them); the encoder's own look-ahead
(x264 ``medium``: about 40 frames in YUV) is the other bounded part.

The output goes to a temporary file renamed into place when complete
(:func:`spsr_cli.files.atomic_path`), under the same claim as images
(:mod:`spsr_cli.engine.claims`): an interrupted video leaves nothing, and running the command
again starts that video from its first frame (finished videos are skipped with ``--skip-existing``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, Union

from spsr_cli.engine.batch import (
    SKIPPED,
    Job,
    OutputSpec,
    check_destinations,
    check_name_lengths,
    name_problem,
    output_suffix,
    upscaler_settings,
)
from spsr_cli.engine.claims import claim_output, holder, remove_stale_claims
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import SPSRError, UsageError, VideoError
from spsr_cli.files import atomic_path
from spsr_cli.io.images import SUPPORTED_EXTENSIONS, is_writable_extension
from spsr_cli.io.video import (
    DEFAULT_CRF,
    MUXERS,
    VIDEO_EXTENSIONS,
    Encoding,
    Frame,
    Other,
    VideoInfo,
    VideoReader,
    VideoWriter,
    Window,
    check_codec,
    default_codec,
    even_size,
    frame_times,
    is_video_file,
    muxer_for,
    probe,
)

if TYPE_CHECKING:
    import numpy as np

    from spsr_cli.engine.model_choice import ModelChoice
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.model.architectures import Generator

log = logging.getLogger(__name__)

#: Decoded frames (and copied packets) waiting for the network beyond the one it holds.
DECODE_AHEAD = 2
#: Upscaled frames (and packets) waiting for the encoder.
ENCODE_BEHIND = 2
#: Called with (frames done, frames to do) after each frame is written.
FrameProgress = Callable[[int, int], None]
#: Output bits per pixel assumed when the source states no bit rate (for the disk-space estimate).
_FALLBACK_BITS_PER_PIXEL = 0.15


@dataclass(frozen=True)
class VideoSettings:
    """How videos are encoded and which part is taken.

    Attributes:
        codec: ``h264``, ``hevc``, ``av1`` or ``vp9``; None: H.264 (VP9 into WebM).
        crf, preset: the encoder's quality and speed (None: :data:`~spsr_cli.io.video.DEFAULT_CRF`
            and :data:`~spsr_cli.io.video.DEFAULT_PRESET` of the codec).
        frames: (START, END) frame indices in presentation order, END exclusive or None (to the end).
        fps_limit: at most this many frames per second are upscaled (the others are dropped; the
            frames kept keep their times, so the duration stays).
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    frames: tuple[int, int | None] | None = None
    fps_limit: float | None = None

    def encoding(self, muxer: str) -> Encoding:
        """The resolved :class:`Encoding` for a container (:class:`UsageError` for a mismatch)."""
        codec = self.codec or default_codec(muxer)
        check_codec(codec, muxer)
        return Encoding(codec=codec, crf=self.crf, preset=self.preset).resolved()

    def check(self) -> None:
        """Refuse settings no video can take (before any work)."""
        if self.codec is not None:
            Encoding(codec=self.codec, crf=self.crf, preset=self.preset).resolved()
        if self.fps_limit is not None and not (math.isfinite(self.fps_limit) and self.fps_limit > 0):
            raise UsageError(f"--fps-limit must be a positive number of frames per second, got {self.fps_limit}")


def parse_frames(text: str | None) -> tuple[int, int | None] | None:
    """``--frames START:END`` (frame indices from 0, END exclusive; either may be left out) -> (START, END)."""
    if text is None:
        return None
    start_text, sep, end_text = text.partition(":")
    try:
        start = int(start_text) if start_text.strip() else 0
        end = int(end_text) if end_text.strip() else None
    except ValueError:
        start, end, sep = -1, None, ""
    if not sep or start < 0 or (end is not None and end <= start):
        raise UsageError(
            f"--frames {text!r} is not START:END with 0 <= START < END (frame numbers from 0, END not included; "
            "e.g. 0:48 or 100:)"
        )
    return start, end


@dataclass
class VideoReport:
    """What happened to one video, for logs and ``--json`` records.

    ``status`` is ``written``, ``skipped`` or ``failed`` (``reason`` says why for the last two).
    Sizes are (width, height) in stored pixels; ``fps`` is frames upscaled per second of
    ``seconds`` (the whole job: decoding, network, encoding); ``codecs`` maps ``video`` to
    ``"IN -> OUT"`` and ``audio``/``subtitle`` to per-stream notes (``aac copied``,
    ``pcm_s16le -> aac``, ``subrip left out``). ``seconds`` excludes one-off costs (loading a model,
    its warm-up), as an image's does. ``model``: under ``--model auto``, the model chosen for it and why.
    """

    source: Path
    target: Path
    status: str
    reason: str | None = None
    seconds: float | None = None
    frames: int | None = None
    total: int | None = None
    fps: float | None = None
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    codecs: dict = field(default_factory=dict)
    input_bytes: int | None = None
    output_bytes: int | None = None
    estimated_bytes: int | None = None
    max_in_flight: int | None = None
    model: dict | None = None

    def to_json(self) -> dict:
        return {
            "input": os.fsdecode(self.source),
            "output": os.fsdecode(self.target),
            "status": self.status,
            "reason": self.reason,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "frames": self.frames,
            "fps": None if self.fps is None else round(self.fps, 3),
            "input_size": list(self.input_size) if self.input_size else None,
            "output_size": list(self.output_size) if self.output_size else None,
            "codecs": self.codecs,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            **({"model": self.model} if self.model is not None else {}),
        }


@dataclass
class VideoResult:
    """Every video's :class:`VideoReport`, in job order, how the network ran (empty if it never did) and,
    per model used, its one-off ``load_seconds`` and ``warm_up_seconds`` (as
    :attr:`~spsr_cli.engine.batch.BatchResult.one_off`)."""

    reports: list[VideoReport] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    one_off: dict = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.reports)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0


# ---------------------------------------------------------------- planning


def split_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """(video files, the other inputs) of the ``spsr upscale`` arguments: a video is a file given by
    name whose contents are a video container (or whose extension names one); folders and patterns
    stay with the images."""
    videos: list[Path] = []
    rest: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        (videos.append(path) if is_video_file(path) else rest.append(item))  # type: ignore[func-returns-value]
    return videos, rest


def plan_video_jobs(sources: Sequence[Path], spec: OutputSpec, *, scale: float, settings: VideoSettings) -> list[Job]:
    """One job per video; outputs named as images are (``clip_x4.mp4``, ``-o`` a file for one input or a
    folder), in the input's container unless ``spec.ext`` or ``-o FILE`` names another video container
    (an image format in ``spec.ext`` is for the images of the run: videos keep their container).

    Raises :class:`UsageError` before any work for an output that would overwrite an input, a codec the
    container cannot hold, an output folder that cannot be written, or a ``--suffix`` or ``-o`` too long
    for a file name; an output name too long for the file system fails that video alone.
    """
    settings.check()
    suffix = output_suffix(spec.suffix, scale)
    ext = "." + spec.ext.lower().lstrip(".") if spec.ext else None
    check_name_lengths(spec, suffix, ext if ext in MUXERS else None)
    if ext is not None and ext not in MUXERS:
        if not is_writable_extension(ext):
            raise UsageError(
                f"--ext {spec.ext} is neither an image format ({', '.join(SUPPORTED_EXTENSIONS)}) nor a video "
                f"container ({', '.join(sorted(MUXERS))})"
            )
        ext = None  # an image format: for the images of the run; videos keep their container
    out = spec.output
    single = out is not None and len(sources) == 1 and out.suffix.lower() in VIDEO_EXTENSIONS and not out.is_dir()
    if out is not None and not single and out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is an existing file, but there are several inputs; -o must name a folder")
    if out is not None and not single and not out.exists() and out.suffix.lower() in VIDEO_EXTENSIONS:
        raise UsageError(f"-o {out} looks like a file name, but there are {len(sources)} videos; name a folder")
    jobs = []
    for source in sources:
        if single:
            assert out is not None
            target = out
        else:
            container = source.suffix if source.suffix.lower() in MUXERS else ".mp4"
            target = (source.parent if out is None else out) / f"{source.stem}{suffix}{ext or container}"
        settings.encoding(muxer_for(target))
        try:
            same = target.resolve() == source.resolve()
        except OSError:
            same = False
        if same:
            raise UsageError(f"output {target} would overwrite the input video; choose another -o or --suffix")
        jobs.append(Job(source=source, target=target, problem=name_problem(target)))
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = Path(os.path.abspath(job.target))
        if key in seen:
            raise UsageError(f"inputs {seen[key]} and {job.source} would both be written to {job.target}")
        seen[key] = job.source
    check_destinations([job for job in jobs if job.problem is None])
    return jobs


def _window(info: VideoInfo, settings: VideoSettings) -> tuple[Window, int]:
    """The part of the video to take and how many frames that is (packets are counted where the
    container states no frame count, or where ``--frames``/``--fps-limit`` need the frames' times)."""
    if settings.frames is None and settings.fps_limit is None and info.frames:
        return Window(), info.frames
    times = frame_times(info.path, info.video_index)
    start, end = settings.frames or (0, None)
    if start >= len(times):
        raise UsageError(f"--frames {start}:{end if end is not None else ''}: {info.path} has {len(times)} frames")
    stop = len(times) if end is None else min(end, len(times))
    chosen = times[start:stop]
    count = len(chosen)
    if settings.fps_limit is not None:
        count, next_time = 0, None
        for pts in chosen:
            now = float(pts * info.time_base)
            if next_time is None or now >= next_time - 1e-9:
                count += 1
                next_time = (now if next_time is None else next_time) + 1 / settings.fps_limit
    seconds = None
    if settings.frames is not None:
        begin = float(times[start] * info.time_base)
        finish = float(times[stop] * info.time_base) if stop < len(times) else math.inf
        seconds = (begin, finish)
    return Window(start=start, end=end, fps_limit=settings.fps_limit, seconds=seconds), count


def estimate_output_bytes(info: VideoInfo, size: tuple[int, int], frames: int, encoding: Encoding) -> int:
    """A rough size of the output: the source's video bits per pixel (or 0.15) over the output's pixels,
    doubled per 6 steps of ``--crf`` below the codec's default (halved above), plus the other streams."""
    pixels = info.width * info.height
    rate = float(info.rate) if info.rate else 25.0
    bpp = info.bit_rate / (pixels * rate) if info.bit_rate else _FALLBACK_BITS_PER_PIXEL
    quality = 2 ** ((DEFAULT_CRF[encoding.codec] - (encoding.crf or DEFAULT_CRF[encoding.codec])) / 6)
    video = bpp * quality * size[0] * size[1] * frames / 8
    source_video = (info.bit_rate or 0) * (info.duration or 0) / 8
    others = max(0, info.size_bytes - source_video) if info.others else 0
    return int(video + others)


def disk_space_warning(target: Path, estimate: int, *, free: int | None = None) -> str | None:
    """A warning when ``estimate`` bytes would not fit in the free space where ``target`` goes (None if it fits)."""
    if free is None:
        folder = Path(os.path.abspath(target)).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return None
    if estimate <= free:
        return None
    return (
        f"{target.name} may not fit: about {estimate / 2**20:,.0f} MiB estimated from the source's bit rate, "
        f"{free / 2**20:,.0f} MiB free; raise --crf, use --frames for a trial, or write elsewhere with -o"
    )


# ---------------------------------------------------------------- one video


class _InFlight:
    """Counts frames decoded and not yet written (on two threads), and the most at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.now += n
            self.most = max(self.most, self.now)


def upscale_video(
    info: VideoInfo,
    target: Path,
    upscaler: Upscaler,
    settings: VideoSettings = VideoSettings(),
    *,
    outscale: float | None = None,
    on_frame: FrameProgress | None = None,
) -> VideoReport:
    """Upscale the video ``info`` describes into ``target`` (written whole or not at all).

    Every frame goes through :func:`~spsr_cli.engine.pipeline.upscale_image` (H x W x 3 float32 RGB in
    [0, 1] in, uint8 or uint16 RGB out, ``upscaler.scale`` or ``outscale`` times larger; an odd output
    size loses its last column or row, as 4:2:0 chroma needs even sizes). Raises :class:`VideoError`
    for a file that cannot be read on (a truncated MP4/MOV is refused by :func:`~spsr_cli.io.video.probe`;
    a Matroska file that ends early gets a warning), :class:`UsageError` for settings the output cannot take, and
    :class:`~spsr_cli.engine.tiling.MemoryBudgetError` when a frame cannot fit.
    """
    from spsr_cli.engine import pipeline
    from spsr_cli.engine.pipeline import Prefetcher, WriteBehind
    from spsr_cli.io.images import Image

    muxer = muxer_for(target)
    encoding = settings.encoding(muxer)
    factor = upscaler.scale if outscale is None else outscale
    wanted = (max(1, round(info.width * factor)), max(1, round(info.height * factor)))
    size = even_size(*wanted)
    if size != wanted:
        log.warning(
            "%s: the output is %dx%d, written %dx%d (4:2:0 chroma needs even sizes)", info.path.name, *wanted, *size
        )
    window, total = _window(info, settings)
    estimate = estimate_output_bytes(info, size, total, encoding)
    warning = disk_space_warning(target, estimate)
    if warning:
        log.warning("%s", warning)
    deep = info.bit_depth > 8
    counter = _InFlight()
    done = 0
    last_end: float | None = None
    started = time.perf_counter()
    report = VideoReport(
        source=info.path,
        target=target,
        status="written",
        total=total,
        input_size=(info.width, info.height),
        output_size=size,
        input_bytes=info.size_bytes,
        estimated_bytes=estimate,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, VideoReader(info) as reader:
        writer = VideoWriter(tmp, muxer, info, reader, size=size, encoding=encoding)
        try:
            copy, decode = tuple(writer.copied), tuple(writer.reencoded)

            def events():
                try:
                    yield from reader.events(window, copy, decode)
                except Exception as err:  # handed to the caller's thread through load()
                    yield err

            def load(event: object) -> np.ndarray | None:
                if isinstance(event, Exception):
                    raise event
                if isinstance(event, Frame):
                    counter.add(1)
                    return reader.rgb(event)
                return None

            def write(rgb: np.ndarray, frame: Frame) -> None:
                nonlocal last_end
                writer.write_frame(rgb, frame.pts, frame.duration)
                last_end = float((frame.pts + frame.duration) * info.time_base)

            def settle(outcomes: list) -> None:
                nonlocal done
                for key, error in outcomes:
                    if error is not None:
                        raise error
                    if key is not None:
                        counter.add(-1)
                        done += 1
                        if on_frame is not None:
                            on_frame(done, total)

            with Prefetcher(events(), load, depth=DECODE_AHEAD) as decoded, WriteBehind(depth=ENCODE_BEHIND) as queue:
                for event, rgb, error in decoded:
                    settle(queue.finished())
                    if error is not None:
                        raise error
                    if isinstance(event, Other):
                        queue.submit(None, lambda event=event: writer.write_other(event))
                        continue
                    assert isinstance(event, Frame) and rgb is not None
                    image = Image(rgb=rgb, bit_depth=16 if deep else 8)
                    del rgb
                    out = pipeline.upscale_image(image, upscaler, outscale=outscale, make_room=queue.make_room)
                    del image
                    queue.submit(event.index, lambda out=out.rgb, event=event: write(out, event))
                    del out
                settle(queue.drain())
            writer.close()
        except BaseException:
            writer.abandon()
            raise
        if done == 0:
            raise VideoError(f"{info.path}: no frame was decoded in the range asked for")
        if window == Window() and info.frames and done < info.frames:  # an edit list may cut frames legitimately
            log.warning("%s: %d of the %d frames it states could be decoded", info.path.name, done, info.frames)
        elif window == Window() and last_end is not None and info.duration and last_end < info.duration - 1:
            log.warning(
                "%s: the video ends at %.2f s but the file says it lasts %.2f s (truncated?)",
                info.path.name,
                last_end,
                info.duration,
            )
    report.seconds = time.perf_counter() - started
    report.frames = done
    report.fps = done / report.seconds if report.seconds > 0 else None
    report.output_bytes = target.stat().st_size
    report.max_in_flight = counter.most
    report.codecs = _codecs(info, writer, encoding)
    return report


def _codecs(info: VideoInfo, writer: VideoWriter, encoding: Encoding) -> dict:
    notes: dict[str, list[str] | str] = {"video": f"{info.codec} -> {encoding.codec} (crf {encoding.crf})"}
    dropped = {s.index for s in writer.dropped}
    for other in info.others:
        if other.index in writer.copied:
            note = f"{other.codec} copied"
        elif other.index in writer.reencoded:
            note = f"{other.codec} -> {writer.reencoded[other.index].codec_context.name}"
        elif other.index in dropped:
            note = f"{other.codec} left out"
        else:
            continue
        notes.setdefault(other.type, []).append(note)  # type: ignore[union-attr]
    return notes


# ---------------------------------------------------------------- many videos


def run_video_jobs(
    jobs: Sequence[Job],
    model: Union[Generator, ModelChoice, Callable[[], Union[Generator, ModelChoice]]],
    options: InferenceOptions,
    settings: VideoSettings = VideoSettings(),
    *,
    outscale: float | None = None,
    skip_existing: bool = False,
    on_start: Callable[[Job, int | None], None] | None = None,
    on_frame: FrameProgress | None = None,
    on_report: Callable[[VideoReport], None] | None = None,
    warm_up: bool = False,
) -> VideoResult:
    """Upscale every video; one that fails (unreadable, truncated, audio only, no PyAV) is reported and the
    rest go on. ``model`` is what :func:`~spsr_cli.engine.batch.run_jobs` takes: the network is built on
    the first video that needs it (after that video was probed). ``on_start(job, frames)`` is called
    when a video starts, with its frame count where known. ``warm_up``: run one small tile through a
    model before its first frame is timed (a ``ModelChoice`` passed in decides this itself)."""
    result = VideoResult()
    for folder in {job.target.parent for job in jobs}:
        for stale in remove_stale_claims(folder):
            log.info("removed %s, left by an interrupted run", stale)
    choice = None

    def book(report: VideoReport) -> None:
        result.reports.append(report)
        if on_report is not None:
            on_report(report)

    for job in jobs:
        if job.problem is not None:
            book(VideoReport(job.source, job.target, "failed", job.problem))
            continue
        if skip_existing and job.target.exists():
            book(VideoReport(job.source, job.target, "skipped", SKIPPED))
            continue
        try:
            claim = claim_output(job.target)
        except OSError as err:
            book(VideoReport(job.source, job.target, "failed", f"cannot write {job.target}: {err}"))
            continue
        if claim is None:
            reason = f"{SKIPPED}: another process (pid {holder(job.target)}) is writing {job.target}"
            book(VideoReport(job.source, job.target, "skipped", reason))
            continue
        started = time.perf_counter()
        chosen = None
        try:
            with claim:
                info = probe(job.source)
                if choice is None:
                    choice = _model_choice(model, options, warm_up=warm_up)
                    result.settings = upscaler_settings(choice.first)
                    result.one_off = choice.one_off
                upscaler = choice.upscaler_for(job.source)
                chosen = choice.last
                started = time.perf_counter()  # loading a model for this video is a one-off cost
                if on_start is not None:
                    on_start(job, info.frames)
                report = upscale_video(info, job.target, upscaler, settings, outscale=outscale, on_frame=on_frame)
                report.model = chosen
        except (SPSRError, OSError, MemoryError) as err:
            log.debug("failed on %s", job.source, exc_info=err)
            reason = str(err) or type(err).__name__
            failed = VideoReport(job.source, job.target, "failed", reason, seconds=time.perf_counter() - started)
            failed.model = chosen
            book(failed)
            continue
        book(report)
    return result


def _model_choice(model, options: InferenceOptions, *, warm_up: bool = False) -> ModelChoice:
    import torch

    from spsr_cli.engine.model_choice import ModelChoice

    loaded = model if isinstance(model, (torch.nn.Module, ModelChoice)) else model()
    if isinstance(loaded, ModelChoice):
        return loaded
    return ModelChoice.of_module(loaded, options, hint_jpeg=False, warm_up=warm_up)


__all__ = [
    "VideoReport",
    "VideoResult",
    "VideoSettings",
    "disk_space_warning",
    "estimate_output_bytes",
    "parse_frames",
    "plan_video_jobs",
    "run_video_jobs",
    "split_inputs",
    "upscale_video",
]
