"""``compare_photos(...)``: run several models on your own photos (no HR needed) and write a report.

For each photo, into the output folder:

* ``full/NAME/input.png`` (the photo as read: EXIF orientation applied, 8-bit RGB) and
  ``full/NAME/LABEL.png`` (each model's output);
* ``crops/NAME.png``: the same window of the input (enlarged by the scale, nearest neighbour,
  so its pixels stay visible) and of every output side by side, labelled
  (:func:`spsr_cli.eval.runner.side_by_side`; the window is the most detailed ``CROP_SIZE``-pixel
  one of the input, or the one given in input pixels);

and once ``index.html`` (:func:`render_index`: a static page, vanilla script inline, no server, no
external URL, images by relative path, so the folder can be moved or opened offline) with one viewer
per photo: two pickers (A and B: the input, enlarged by nearest neighbour, or any model) over one
before/after line, zoom (fit, 1:1 and beyond, pixels unsmoothed) and pan shared by both sides, a strip
of the same window of the input and of every model around a point chosen by clicking, and each
model's seconds per output megapixel after warm-up; plus ``compare.json`` with the same facts for
scripts.

Files are written atomically (:mod:`spsr_cli.files`). A file this run would write that exists
already is refused before any work unless ``force``; an input photo is never overwritten.
"""

from __future__ import annotations

import html
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
from spsr_cli.eval.runner import (
    Crop,
    Upscale,
    crop_window,
    model_labels,
    prepare_models,
    record_what_ran,
    side_by_side,
    software_versions,
)
from spsr_cli.files import atomic_path, nearest_existing, unwritable_reason, write_json_atomic, write_text_atomic
from spsr_cli.io.images import is_image_path
from spsr_cli.io.video import is_video_file, read_frame_at

log = logging.getLogger(__name__)

INPUT = "input"
INDEX = "index.html"
REPORT = "compare.json"
#: Default crop edge in input pixels (x4: a 256-pixel window of the outputs, shown 1:1).
CROP_SIZE = 64
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
    window: tuple[int, int, int] | None = None  # the crop: x, y, size in output pixels
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

    def timing(self, label: str) -> dict[str, float | None]:
        """One model's time over every compared photo (upscaling alone: load and warm-up are in its record)."""
        runs = [o for p in self.photos if p.error is None for o in p.outputs if o.label == label]
        seconds = sum(o.seconds for o in runs) if runs else None
        pixels = sum(o.pixels for o in runs)
        return {
            "upscale_seconds": _rounded(seconds),
            "output_megapixels": round(pixels / 1e6, 4),
            "seconds_per_output_megapixel": _rounded(per_megapixel(seconds, pixels)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [
                {"model": m, "label": label, **record, "timing": self.timing(label)}
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
                    "crop_window": dict(zip(("x", "y", "size"), p.window)) if p.window else None,
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

    ``crop``: the window in *input* pixels (default: the most detailed ``CROP_SIZE``-pixel one); the
    page's crop strip starts there.
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
    record_what_ran(prepared)
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
    wanted = (
        Crop(size=CROP_SIZE * scale)
        if crop is None
        else Crop(
            x=crop.x * scale if crop.x is not None else None,
            y=crop.y * scale if crop.y is not None else None,
            size=crop.size * scale,
        )
    )
    x, y, size = crop_window(enlarged, wanted)
    result.window = (x, y, size)
    result.crop_file = f"crops/{result.name}.png"
    figure = side_by_side(enlarged, outputs, [INPUT, *labels], Crop(x=x, y=y, size=size), zoom=crop_zoom(size))
    save_png(out_dir / result.crop_file, figure)


def crop_zoom(size: int) -> int:
    """How much the crop figure (and the page's strip, at first) enlarges a ``size``-pixel window: 2 up to
    160 output pixels, else 1."""
    return 2 if size <= 160 else 1


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

#: The viewer's zoom buttons: screen pixels per output pixel (1: one output pixel on one screen pixel).
ZOOMS = (1, 2, 4, 8)
#: The crop strip's magnifications (screen pixels per output pixel).
STRIP_ZOOMS = (1, 2, 4)


def _url(relative: str) -> str:
    return html.escape("/".join(quote(part, safe="") for part in relative.split("/")), quote=True)


def _first_pair(labels: Sequence[str]) -> tuple[str, str]:
    """The pickers' first choice: input vs the model when there is one, else the first two models."""
    return (INPUT, labels[0]) if len(labels) == 1 else (labels[0], labels[1])


def _number(value: float | None, digits: int = 2) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
table.models { border-collapse: collapse; margin: 0.5em 0 1em; }
.models th, .models td { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
.models td.n { text-align: right; font-variant-numeric: tabular-nums; }
kbd { border: 1px solid #bbb; border-radius: 3px; padding: 0 0.3em; background: #fff; }
section.photo { margin: 2em 0 3em; }
.bar { display: flex; flex-wrap: wrap; gap: 0.4em 1.5em; align-items: center; margin: 0.4em 0; }
.bar .zoom { flex: 1; text-align: center; }
button { font: inherit; padding: 0.1em 0.6em; }
.view { position: relative; overflow: hidden; width: 100%; height: 240px; background: #2b2b2b;
  cursor: grab; touch-action: none; user-select: none; outline-offset: 2px; }
.view .layer { position: absolute; top: 0; left: 0; right: 0; bottom: 0; }
.view img, .strip img { position: absolute; left: 0; top: 0; max-width: none; }
.view.pixels img, .view img.input, .strip img { image-rendering: pixelated; }
.view .box { position: absolute; outline: 1px dashed #ff0; box-shadow: 0 0 0 1px #000; pointer-events: none; }
.view .box.hidden { display: none; }
.view .divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #e33; }
.view .handle { position: absolute; top: 50%; left: -9px; width: 20px; height: 20px; margin-top: -10px;
  border-radius: 50%; background: #e33; cursor: ew-resize; }
.split { display: block; width: 100%; margin: 0.4em 0; }
.labels { display: flex; flex-wrap: wrap; gap: 0 1em; justify-content: space-between; font-weight: 600; }
.strip { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 0.5em 0; }
.strip figure { margin: 0; }
.strip .win { position: relative; overflow: hidden; background: #2b2b2b; }
.strip figure.is-a .win { outline: 3px solid #e33; }
.strip figure.is-b .win { outline: 3px solid #36c; }
.strip figcaption { font-size: 13px; }
.strip figure.is-a figcaption::before { content: "A: "; color: #e33; font-weight: 600; }
.strip figure.is-b figcaption::before { content: "B: "; color: #36c; font-weight: 600; }
.error { color: #b00; }
"""

_SCRIPT = r"""
(function () {
  'use strict';
  var LEVELS = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16];  // screen pixels per output pixel
  function ratio() { return window.devicePixelRatio || 1; }
  function snap(v) { var r = ratio(); return Math.round(v * r) / r; }
  function place(offset, size, room) {  // centred when it fits, else kept covering the view
    return size <= room ? (room - size) / 2 : Math.min(0, Math.max(room - size, offset));
  }
  function corner(point, dim, shown) { return Math.max(0, Math.min(dim - shown, point - Math.floor(shown / 2))); }

  function setup(root) {
    var W = +root.dataset.w, H = +root.dataset.h, edge = +root.dataset.win * +root.dataset.mag;
    var view = root.querySelector('.view'), split = root.querySelector('.split');
    var layerA = view.querySelector('.layer.a'), box = view.querySelector('.box');
    var divider = view.querySelector('.divider'), level = root.querySelector('.level');
    var mark = root.querySelector('.mark'), where = root.querySelector('.where');
    var img = {a: view.querySelector('img.a'), b: view.querySelector('img.b')};
    var pick = {a: root.querySelector('select.pick-a'), b: root.querySelector('select.pick-b')};
    var text = {a: root.querySelector('.la'), b: root.querySelector('.lb')};
    var panels = Array.prototype.slice.call(root.querySelectorAll('.strip figure'));
    var half = Math.floor(+root.dataset.win / 2);
    var s = {z: 1, x: 0, y: 0, fit: true, mag: +root.dataset.mag,
             px: +root.dataset.x + half, py: +root.dataset.y + half};

    function fitZoom() { return Math.min(view.clientWidth / W, view.clientHeight / H); }
    function draw() {
      var z = s.z, w = W * z, h = H * z;
      s.x = snap(place(s.x, w, view.clientWidth));
      s.y = snap(place(s.y, h, view.clientHeight));
      ['a', 'b'].forEach(function (k) {
        var st = img[k].style;
        st.width = w + 'px'; st.height = h + 'px'; st.left = s.x + 'px'; st.top = s.y + 'px';
      });
      view.classList.toggle('pixels', z * ratio() > 0.999);
      var v = +split.value;
      layerA.style.clipPath = 'inset(0 ' + (100 - v) + '% 0 0)';
      divider.style.left = v + '%';
      var shown = Math.round(edge / s.mag), cx = corner(s.px, W, shown), cy = corner(s.py, H, shown);
      box.style.left = (s.x + cx * z) + 'px'; box.style.top = (s.y + cy * z) + 'px';
      box.style.width = Math.min(shown, W) * z + 'px'; box.style.height = Math.min(shown, H) * z + 'px';
      box.classList.toggle('hidden', !mark.checked);
      panels.forEach(function (f) {
        var st = f.querySelector('img').style;
        st.width = W * s.mag + 'px'; st.height = H * s.mag + 'px';
        st.left = -cx * s.mag + 'px'; st.top = -cy * s.mag + 'px';
        f.classList.toggle('is-a', f.dataset.choice === pick.a.value);
        f.classList.toggle('is-b', f.dataset.choice === pick.b.value);
      });
      level.textContent = Math.round(z * ratio() * 100) + '%';
      where.textContent = 'point ' + s.px + ', ' + s.py + ': window ' + cx + ', ' + cy + ', ' + shown +
        ' output pixels, shown ' + s.mag + '\u00d7';
      var d = root.dataset;
      d.zoom = z; d.offsetX = s.x; d.offsetY = s.y; d.pointX = s.px; d.pointY = s.py;
      d.cropX = cx; d.cropY = cy; d.cropSize = shown;
    }
    function choose() {
      ['a', 'b'].forEach(function (k) {
        var o = pick[k].options[pick[k].selectedIndex];
        if (img[k].getAttribute('src') !== o.dataset.src) { img[k].setAttribute('src', o.dataset.src); }
        img[k].classList.toggle('input', pick[k].value === 'input');
        img[k].alt = (k === 'a' ? 'A: ' : 'B: ') + o.textContent;
        text[k].textContent = k === 'a' ? '\u2190 A: ' + o.textContent : 'B: ' + o.textContent + ' \u2192';
      });
      draw();
    }
    function swap() { var t = pick.a.value; pick.a.value = pick.b.value; pick.b.value = t; choose(); }
    function zoomAt(z, vx, vy) {  // keeps the image point under (vx, vy) there
      var ix = (vx - s.x) / s.z, iy = (vy - s.y) / s.z;
      s.fit = false; s.z = z; s.x = vx - ix * z; s.y = vy - iy * z; draw();
    }
    function zoomOn(z) {  // centres the chosen point
      s.fit = false; s.z = z;
      s.x = view.clientWidth / 2 - (s.px + 0.5) * z; s.y = view.clientHeight / 2 - (s.py + 0.5) * z; draw();
    }
    function fit() { s.fit = true; s.z = fitZoom(); draw(); }
    function stepped(dir) {
      var levels = LEVELS.map(function (l) { return l / ratio(); }), i;
      if (dir > 0) {
        for (i = 0; i < levels.length; i++) { if (levels[i] > s.z * 1.001) { return levels[i]; } }
        return levels[levels.length - 1];
      }
      for (i = levels.length - 1; i >= 0; i--) { if (levels[i] < s.z * 0.999) { return levels[i]; } }
      return levels[0];
    }
    function resize() {
      var w = view.clientWidth;
      view.style.height = Math.max(64, Math.round(Math.min(H * Math.min(1, w / W), window.innerHeight * 0.8))) + 'px';
      if (s.fit) { s.z = fitZoom(); }
      draw();
    }

    var drag = null;
    view.addEventListener('pointerdown', function (ev) {
      if (ev.button !== 0) { return; }
      ev.preventDefault();
      view.focus({preventScroll: true});
      view.setPointerCapture(ev.pointerId);
      drag = {x: ev.clientX, y: ev.clientY, ox: s.x, oy: s.y, moved: false,
              line: ev.target === divider || ev.target.classList.contains('handle')};
    });
    view.addEventListener('pointermove', function (ev) {
      if (!drag) { return; }
      var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; }
      if (!drag.moved) { return; }
      if (drag.line) {
        var r = view.getBoundingClientRect();
        split.value = (ev.clientX - r.left) / r.width * 100;
      } else {
        s.fit = false; s.x = drag.ox + dx; s.y = drag.oy + dy;
      }
      draw();
    });
    view.addEventListener('pointerup', function (ev) {
      if (drag && !drag.moved && !drag.line) {  // a click: the crop strip's point
        var r = view.getBoundingClientRect();
        s.px = Math.min(W - 1, Math.max(0, Math.floor((ev.clientX - r.left - s.x) / s.z)));
        s.py = Math.min(H - 1, Math.max(0, Math.floor((ev.clientY - r.top - s.y) / s.z)));
        draw();
      }
      drag = null;
    });
    view.addEventListener('pointercancel', function () { drag = null; });
    view.addEventListener('wheel', function (ev) {
      ev.preventDefault();
      var r = view.getBoundingClientRect();
      zoomAt(stepped(ev.deltaY < 0 ? 1 : -1), ev.clientX - r.left, ev.clientY - r.top);
    }, {passive: false});
    view.addEventListener('keydown', function (ev) {
      var k = ev.key, step = k === 'ArrowLeft' ? -10 : 10;
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      if (k === 'ArrowLeft' || k === 'ArrowRight') {
        split.value = ev.shiftKey ? (step < 0 ? 0 : 100) : +split.value + step; draw();
      } else if (k === 'a' || k === 'A') { split.value = 100; draw(); }
      else if (k === 'b' || k === 'B') { split.value = 0; draw(); }
      else if (k === 'x' || k === 'X') { swap(); }
      else if (k === '+' || k === '=') { zoomAt(stepped(1), view.clientWidth / 2, view.clientHeight / 2); }
      else if (k === '-') { zoomAt(stepped(-1), view.clientWidth / 2, view.clientHeight / 2); }
      else if (k === '0') { fit(); }
      else if (k === '1') { zoomOn(1 / ratio()); }
      else { return; }
      ev.preventDefault();
    });
    split.addEventListener('input', draw);
    mark.addEventListener('change', draw);
    pick.a.addEventListener('change', choose);
    pick.b.addEventListener('change', choose);
    root.querySelector('.swap').addEventListener('click', swap);
    root.querySelectorAll('button[data-zoom]').forEach(function (b) {
      b.addEventListener('click', function () {
        if (b.dataset.zoom === 'fit') { fit(); } else { zoomOn(+b.dataset.zoom / ratio()); }
      });
    });
    root.querySelectorAll('button[data-mag]').forEach(function (b) {
      b.addEventListener('click', function () { s.mag = +b.dataset.mag; draw(); });
    });
    window.addEventListener('resize', resize);
    resize();
    choose();
  }
  document.querySelectorAll('.cmp').forEach(setup);
})();
"""

_HELP = (
    "Per photo: pick any two of the input and the models as <b>A</b> (left of the red line) and <b>B</b> "
    "(right). Drag the line&rsquo;s handle or the slider under the view to move the line; drag the view to "
    "pan; the wheel zooms where it points; the buttons zoom on the chosen point (1:1 puts one output pixel "
    "on one screen pixel; from 1:1 up pixels are shown unsmoothed). Both sides always show the same place "
    "at the same zoom. Click the view to choose the point whose window (dashed box) the strip below shows "
    "for the input and every model. The input is enlarged by nearest neighbour (each input pixel a block "
    "of output pixels). Keys on the view: <kbd>&larr;</kbd> <kbd>&rarr;</kbd> move the line "
    "(with <kbd>Shift</kbd>: to the end), <kbd>A</kbd> / <kbd>B</kbd> show all of A / all of B, "
    "<kbd>X</kbd> swaps A and B, <kbd>+</kbd> <kbd>-</kbd> zoom, <kbd>0</kbd> fits, <kbd>1</kbd> is 1:1."
)


def _models_table(result: CompareResult) -> list[str]:
    """Each model: what it is, its seconds per output megapixel over every photo, its one-off costs."""
    e = html.escape
    records = result.records or [{} for _ in result.models]
    rows = [
        '<table class="models"><thead><tr><th>label</th><th>model</th><th>s per output MP (after warm-up)</th>'
        "<th>load s</th><th>warm-up s</th></tr></thead><tbody>"
    ]
    for model, label, record in zip(result.models, result.labels, records):
        timing = result.timing(label)
        rows.append(
            f"<tr><td><b>{e(label)}</b></td><td>{e(model)}</td>"
            f'<td class="n">{_number(timing["seconds_per_output_megapixel"], 3)}</td>'
            f'<td class="n">{_number(record.get("load_seconds"))}</td>'
            f'<td class="n">{_number(record.get("warm_up_seconds"))}</td></tr>'
        )
    rows.append("</tbody></table>")
    return rows


def _photo_section(photo: PhotoResult, result: CompareResult) -> list[str]:
    """One photo's viewer (pickers, view, line, crop strip) or its error."""
    e = html.escape
    parts = [f'<section class="photo" id="{e(photo.name)}">', f"<h2>{e(photo.name)}</h2>"]
    if photo.error is not None:
        return [*parts, f'<p class="error">{e(str(photo.source))}: {e(photo.error)}</p></section>']
    assert photo.size is not None and photo.input_file is not None and photo.crop_file is not None
    assert photo.window is not None
    scale = result.scale
    width, height = photo.size
    out_w, out_h = width * scale, height * scale
    x, y, win = photo.window
    mag = crop_zoom(win)
    files = {INPUT: photo.input_file, **{o.label: o.file for o in photo.outputs}}
    outputs = {o.label: o for o in photo.outputs}
    choices = [INPUT, *(o.label for o in photo.outputs)]

    def caption(choice: str) -> str:
        if choice == INPUT:
            return f"input (nearest x{scale})"
        per = outputs[choice].seconds_per_megapixel
        return choice + ("" if per is None else f", {per:.3f} s/MP")

    def picker(side: str, chosen: str) -> str:
        options = "".join(
            f'<option value="{e(c)}" data-src="{_url(files[c])}"{" selected" if c == chosen else ""}>'
            f"{e(caption(c))}</option>"
            for c in choices
        )
        return f'<label>{side.upper()} <select class="pick pick-{side}">{options}</select></label>'

    a, b = _first_pair(result.labels)
    parts.append(
        f"<p>{e(photo.source.name)}: {width}x{height} to {out_w}x{out_h}; "
        + ", ".join(f"{e(o.label)} {_timed(o)}" for o in photo.outputs)
        + " (after warm-up).</p>"
    )
    zooms = "".join(
        f'<button type="button" data-zoom="{z}">{"1:1" if z == 1 else f"{z}&times;"}</button>' for z in ZOOMS
    )
    mags = "".join(f'<button type="button" data-mag="{m}">{m}&times;</button>' for m in STRIP_ZOOMS)
    edge = win * mag
    parts += [
        f'<div class="cmp" data-w="{out_w}" data-h="{out_h}" data-x="{x}" data-y="{y}" data-win="{win}" '
        f'data-mag="{mag}">',
        f'<div class="bar">{picker("a", a)}<button type="button" class="swap" title="swap A and B (X)">'
        f'&harr;</button>{picker("b", b)}<span class="zoom">zoom <button type="button" data-zoom="fit">fit'
        f'</button>{zooms} <output class="level"></output></span></div>',
        f'<div class="stage" style="max-width: {out_w}px">',
        f'<div class="view" tabindex="0" aria-label="{e(photo.name)}: A left of the line, B right">'
        f'<div class="layer b"><img class="b" src="{_url(files[b])}" alt="B"></div>'
        f'<div class="layer a"><img class="a" src="{_url(files[a])}" alt="A"></div>'
        '<div class="box"></div><div class="divider"><div class="handle" title="drag to move the line">'
        "</div></div></div>",
        '<input type="range" class="split" min="0" max="100" step="0.1" value="50" '
        'aria-label="the line between A and B">',
        '<div class="labels"><span class="la"></span><span class="lb"></span></div></div>',
        f'<div class="bar">crop strip {mags}<label><input type="checkbox" class="mark" checked> mark the '
        'window</label><span class="where"></span></div>',
        '<div class="strip">',
    ]
    for choice in choices:
        parts.append(
            f'<figure data-choice="{e(choice)}"><div class="win" style="width: {edge}px; height: {edge}px">'
            f'<img src="{_url(files[choice])}" alt="{e(choice)}"></div>'
            f"<figcaption>{e(caption(choice))}</figcaption></figure>"
        )
    links = ", ".join(f'<a href="{_url(files[c])}">{e(c)}</a>' for c in choices)
    parts += [
        "</div>",
        f'<p>Full size: {links}; the first crop as one image: <a href="{_url(photo.crop_file)}">'
        f"{e(photo.crop_file)}</a>.</p>",
        "</div></section>",
    ]
    return parts


def render_index(result: CompareResult) -> str:
    """The static ``index.html`` of a comparison (see the module docstring; every name HTML-escaped)."""
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
        f"<p>x{result.scale} with {models}; written by spsr-cli {e(__version__)}. Seconds are each model&rsquo;s "
        "upscaling alone: it was loaded and warmed up (one small tile) before the first photo, and those "
        "one-off costs are listed apart.</p>",
        *_models_table(result),
        f"<p>{_HELP}</p>",
    ]
    for photo in result.photos:
        parts += _photo_section(photo, result)
    parts += [f"<script>{_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


__all__ = [
    "CROP_SIZE",
    "CompareResult",
    "ModelOutput",
    "PhotoResult",
    "check_output_folder",
    "compare_photos",
    "crop_zoom",
    "expand_photos",
    "photo_names",
    "planned_files",
    "render_index",
    "save_png",
]
