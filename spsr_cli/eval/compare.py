"""``compare_photos(...)``: run several models on your own photos (no HR needed) and write a report.

For each photo, into the output folder:

* ``full/NAME/input.png`` (the photo as read: EXIF orientation applied, 8-bit RGB) and
  ``full/NAME/LABEL.png`` (each model's output);
* ``crops/NAME.png``: the same window of the input (enlarged by the scale, nearest neighbour,
  so its pixels stay visible) and of every output side by side, labelled
  (:func:`spsr_cli.eval.runner.side_by_side`; the window is the most detailed one of the input,
  or the one given in input pixels);

and once ``index.html`` (a static page: no server, no external URL, images by relative path,
so the folder can be moved or opened offline) showing each output in full, a before/after
slider per pair of models (input vs model when there is one model) and the seconds each model
took on each photo, plus ``compare.json`` with the same facts for scripts.

Files are written atomically (:mod:`spsr_cli.files`). A file this run would write that exists
already is refused before any work unless ``force``; an input photo is never overwritten.
"""

from __future__ import annotations

import html
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.records import per_megapixel
from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.eval.datasets import read_rgb
from spsr_cli.eval.runner import Crop, Upscale, model_labels, prepare_models, side_by_side, software_versions
from spsr_cli.files import atomic_path, nearest_existing, unwritable_reason, write_json_atomic, write_text_atomic
from spsr_cli.io.images import is_image_path
from spsr_cli.io.video import is_video_file, read_frame_at

log = logging.getLogger(__name__)

INPUT = "input"
INDEX = "index.html"
REPORT = "compare.json"
#: Default crop edge in input pixels (x4: a 128-pixel window of the outputs, shown 2x).
CROP_SIZE = 32
#: called after each photo with (photos done, photos total, photo name)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ModelOutput:
    """One model's output for one photo: ``file`` relative to the output folder, ``seconds`` to compute it
    (the model loaded and warmed up before: no one-off costs), ``pixels`` of output."""

    label: str
    file: str
    seconds: float
    pixels: int = 0

    @property
    def seconds_per_megapixel(self) -> float | None:
        return per_megapixel(self.seconds, self.pixels)


@dataclass
class PhotoResult:
    """One photo: its input copy and crop figure (relative paths), sizes, outputs; or ``error``."""

    name: str
    source: Path
    input_file: str | None = None
    crop_file: str | None = None
    size: tuple[int, int] | None = None  # input width, height
    outputs: list[ModelOutput] = field(default_factory=list)
    error: str | None = None


@dataclass
class CompareResult:
    """What :func:`compare_photos` wrote: ``index`` (the page), ``report`` (JSON) and one entry per photo."""

    out_dir: Path
    models: list[str]
    labels: list[str]
    scale: int
    photos: list[PhotoResult]
    index: Path
    report: Path
    #: Per model (in ``models`` order): who it is, how it ran, its load and warm-up seconds.
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[PhotoResult]:
        return [p for p in self.photos if p.error is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [
                {"model": m, "label": label, **record}
                for m, label, record in zip(self.models, self.labels, self.records or [{} for _ in self.models])
            ],
            "scale": self.scale,
            "photos": [
                {
                    "name": p.name,
                    "source": str(p.source),
                    "input": p.input_file,
                    "crop": p.crop_file,
                    "size": list(p.size) if p.size else None,
                    "outputs": [
                        {
                            "label": o.label,
                            "file": o.file,
                            "seconds": round(o.seconds, 4),
                            "seconds_per_output_megapixel": _rounded(o.seconds_per_megapixel),
                        }
                        for o in p.outputs
                    ],
                    **({"error": p.error} if p.error else {}),
                }
                for p in self.photos
            ],
            "versions": software_versions(),
        }


# ---------------------------------------------------------------- planning


def expand_photos(items: Sequence[str | Path]) -> list[Path]:
    """Files as given (any name) and the image files of folders (not descending), in order, without repeats."""
    if not items:
        raise UsageError("no photo given: pass image files or folders")
    photos: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
            if not found:
                raise UsageError(f"the folder {path} holds no image files")
        else:
            raise UsageError(f"photo {str(item)!r} does not exist")
        photos.extend(p for p in found if p.resolve() not in {q.resolve() for q in photos})
    return photos


def photo_names(photos: Sequence[Path]) -> list[str]:
    """Unique, file-system-safe names (the file stem; ``-2``, ``-3`` ... for repeats)."""
    stems = [p.stem if p.stem not in ("", ".", "..") else "photo" for p in photos]
    return model_labels([f"{stem}.x" for stem in stems])  # the suffix makes model_labels take the stem


def planned_files(names: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Every file a run writes, relative to the output folder."""
    files = [INDEX, REPORT]
    for name in names:
        files += [f"crops/{name}.png", f"full/{name}/{INPUT}.png", *(f"full/{name}/{label}.png" for label in labels)]
    return files


def check_output_folder(out_dir: Path, files: Sequence[str], photos: Sequence[Path], *, force: bool) -> None:
    """Refuse, before any work, an output folder that is a file or not writable, a file of ours that
    would overwrite an input photo, and (without ``force``) any of ``files`` that exists already."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir} is a file; name a folder for the comparison (it is created)")
    reason = unwritable_reason(nearest_existing(out_dir))
    if reason is not None:
        raise UsageError(f"-o {out_dir}: {reason}; choose another -o or fix its permissions")
    inputs = {p.resolve() for p in photos}
    targets = [out_dir / f for f in files]
    clash = [t for t in targets if t.resolve() in inputs]
    if clash:
        raise UsageError(f"{clash[0]} would overwrite the input photo; choose another -o")
    taken = [t for t in targets if t.exists() or t.is_symlink()]
    folders = [t for t in taken if t.is_dir()]
    if folders:
        raise UsageError(f"{folders[0]} is a folder where the comparison writes a file; choose another -o")
    if taken and not force:
        listed = ", ".join(str(t) for t in taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise UsageError(
            f"{listed} exist{'s' if len(taken) == 1 else ''} already; pass --force to replace them or choose another -o"
        )


# ---------------------------------------------------------------- running


def compare_photos(
    photos: Sequence[str | Path],
    models: Sequence[str],
    out_dir: Path,
    *,
    options: InferenceOptions | None = None,
    crop: Crop | None = None,
    force: bool = False,
    offline: bool | None = None,
    upscalers: Sequence[tuple[Upscale, int]] | None = None,
    progress: Progress | None = None,
    at: float | None = None,
) -> CompareResult:
    """Run every model (registry name, weights path or ``bicubic``) on every photo and write the
    report described in the module docstring into ``out_dir``.

    ``crop``: the window in *input* pixels (default: the most detailed ``CROP_SIZE``-pixel one).
    ``upscalers`` may replace loading ``models`` (functions uint8 H x W x 3 -> uint8 sH x sW x 3, scale).
    A video file stands for its frame at ``at`` seconds (default 0; read with PyAV, turned as it is shown).
    A photo that cannot be read or upscaled is recorded with its error; the others go on.
    Raises :class:`UsageError` (nothing computed) for bad photos, models or output folder.
    """
    if not models:
        raise UsageError("no model to compare: pass --model NAME (twice or more, e.g. --model bicubic --model spsr-x4)")
    sources = expand_photos(photos)
    names = photo_names(sources)
    labels = model_labels([INPUT, *models])[1:]  # a model can never be called "input"
    out_dir = Path(out_dir)
    check_output_folder(out_dir, planned_files(names, labels), sources, force=force)
    prepared, scale = prepare_models(models, options, offline=offline, given=upscalers, purpose="be shown side by side")
    upscalers = [(p.upscale, p.scale) for p in prepared]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for done, (source, name) in enumerate(zip(sources, names), start=1):
        result = PhotoResult(name=name, source=source)
        try:
            _compare_one(result, out_dir, labels, upscalers, scale, crop, at)
        except (SPSRError, OSError, MemoryError) as err:
            log.error("%s: %s", source, err)
            result.error = str(err) or type(err).__name__
        results.append(result)
        if progress is not None:
            progress(done, len(sources), name)
    report = CompareResult(
        out_dir=out_dir,
        models=list(models),
        labels=labels,
        scale=scale,
        photos=results,
        index=out_dir / INDEX,
        report=out_dir / REPORT,
        records=[p.record for p in prepared],
    )
    write_json_atomic(report.report, report.to_dict())
    write_text_atomic(report.index, render_index(report))
    return report


def _compare_one(
    result: PhotoResult,
    out_dir: Path,
    labels: Sequence[str],
    upscalers: Sequence[tuple[Upscale, int]],
    scale: int,
    crop: Crop | None,
    at: float | None = None,
) -> None:
    lr = read_photo(result.source, at)
    result.size = (lr.shape[1], lr.shape[0])
    result.input_file = f"full/{result.name}/{INPUT}.png"
    save_png(out_dir / result.input_file, lr)
    outputs = []
    for label, (upscale, _) in zip(labels, upscalers):
        started = time.perf_counter()
        sr = upscale(lr)
        seconds = time.perf_counter() - started
        if sr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise SPSRError(f"{label} made {sr.shape[1]}x{sr.shape[0]} from {lr.shape[1]}x{lr.shape[0]}, not x{scale}")
        file = f"full/{result.name}/{label}.png"
        save_png(out_dir / file, sr)
        result.outputs.append(ModelOutput(label=label, file=file, seconds=seconds, pixels=sr.shape[0] * sr.shape[1]))
        outputs.append(sr)
    enlarged = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    window = (
        Crop(size=CROP_SIZE * scale)
        if crop is None
        else Crop(
            x=crop.x * scale if crop.x is not None else None,
            y=crop.y * scale if crop.y is not None else None,
            size=crop.size * scale,
        )
    )
    zoom = 2 if window.size <= 160 else 1
    result.crop_file = f"crops/{result.name}.png"
    save_png(out_dir / result.crop_file, side_by_side(enlarged, outputs, [INPUT, *labels], window, zoom=zoom))


def read_photo(path: Path, at: float | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB of an image file, or of a video's frame at ``at`` seconds (default: the first)."""
    if is_video_file(path):
        return read_frame_at(path, 0.0 if at is None else at)
    return read_rgb(path)


def _timed(output: ModelOutput) -> str:
    """``1.23 s (0.45 s per output MP)``."""
    per = output.seconds_per_megapixel
    return f"{output.seconds:.2f} s" + (f" ({per:.2f} s per output MP)" if per is not None else "")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def save_png(path: Path, image: np.ndarray) -> None:
    """H x W x 3 uint8 -> PNG at ``path``, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


# ---------------------------------------------------------------- the page


def _url(relative: str) -> str:
    return html.escape("/".join(quote(part, safe="") for part in relative.split("/")), quote=True)


def _pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    return [(INPUT, labels[0])] if len(labels) == 1 else list(itertools.combinations(labels, 2))


_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
section.photo { margin-bottom: 3em; }
.crop { max-width: 100%; border: 1px solid #ccc; }
.pair { max-width: 100%; margin: 1em 0 2em; }
.slider { position: relative; max-width: 100%; line-height: 0; }
.slider img { display: block; width: 100%; height: auto; image-rendering: pixelated; }
.slider img.over { position: absolute; top: 0; left: 0; height: 100%; }
.slider .divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #e33; }
.pair input[type=range] { display: block; width: 100%; margin: 0.4em 0; }
.labels { display: flex; justify-content: space-between; font-weight: 600; }
.full { display: flex; flex-wrap: wrap; gap: 1em; }
.full figure { margin: 0; max-width: 32em; }
.full img { max-width: 100%; height: auto; border: 1px solid #ccc; }
.error { color: #b00; }
"""

_SCRIPT = """
document.querySelectorAll('.pair').forEach(function (pair) {
  var range = pair.querySelector('input[type=range]');
  var over = pair.querySelector('img.over');
  var divider = pair.querySelector('.divider');
  function show() {
    var v = Number(range.value);
    over.style.clipPath = 'inset(0 ' + (100 - v) + '% 0 0)';
    divider.style.left = v + '%';
  }
  range.addEventListener('input', show);
  show();
});
"""


def render_index(result: CompareResult) -> str:
    """The static ``index.html`` of a comparison (see the module docstring)."""
    from spsr_cli import __version__

    e = html.escape
    models = ", ".join(
        f"<b>{e(label)}</b>" + (f" ({e(m)})" if m != label else "") for m, label in zip(result.models, result.labels)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>spsr compare: {e(', '.join(result.labels))}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>spsr compare</h1>",
        f"<p>x{result.scale} with {models}; written by spsr-cli {e(__version__)}. Drag a slider to move the "
        "line between two results; click an image to open it at full size.</p>",
    ]
    for photo in result.photos:
        parts.append(f'<section class="photo" id="{e(photo.name)}">')
        parts.append(f"<h2>{e(photo.name)}</h2>")
        if photo.error is not None:
            parts.append(f'<p class="error">{e(str(photo.source))}: {e(photo.error)}</p></section>')
            continue
        assert photo.size is not None and photo.input_file is not None and photo.crop_file is not None
        width, height = photo.size
        parts.append(
            f"<p>{e(photo.source.name)}: {width}x{height} to {width * result.scale}x{height * result.scale}; "
            + ", ".join(f"{e(o.label)} {_timed(o)}" for o in photo.outputs)
            + " (after warm-up)"
            + "</p>"
        )
        parts.append(
            f'<img class="crop" src="{_url(photo.crop_file)}" alt="{e(photo.name)}: the same crop, '
            f'input and every model">'
        )
        files = {INPUT: photo.input_file, **{o.label: o.file for o in photo.outputs}}
        seconds = {o.label: f" ({o.seconds:.2f} s)" for o in photo.outputs}
        for left, right in _pairs(result.labels):
            parts.append(
                f'<div class="pair" data-left="{e(left)}" data-right="{e(right)}" '
                f'style="width: {width * result.scale}px">'
                f'<div class="slider">'
                f'<img class="under" src="{_url(files[right])}" alt="{e(right)}">'
                f'<img class="over" src="{_url(files[left])}" alt="{e(left)}"><div class="divider"></div></div>'
                f'<input type="range" min="0" max="100" value="50" step="1" aria-label="{e(left)} | {e(right)}">'
                f'<div class="labels"><span>&larr; {e(left)}{seconds.get(left, "")}</span>'
                f"<span>{e(right)}{seconds.get(right, '')} &rarr;</span></div></div>"
            )
        parts.append('<div class="full">')
        for label in [INPUT, *result.labels]:
            caption = f"{e(label)}{seconds.get(label, '')}"
            parts.append(
                f'<figure><a href="{_url(files[label])}"><img src="{_url(files[label])}" alt="{e(label)}"></a>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        parts.append("</div></section>")
    parts += [f"<script>{_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


__all__ = [
    "CROP_SIZE",
    "CompareResult",
    "ModelOutput",
    "PhotoResult",
    "check_output_folder",
    "compare_photos",
    "expand_photos",
    "photo_names",
    "planned_files",
    "render_index",
    "save_png",
]
