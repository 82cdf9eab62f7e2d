"""spsr compare: outputs, crops, the static page (checked in headless Chromium where installed), overwrite policy."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import UsageError
from spsr_cli.eval.compare import compare_photos, photo_names
from spsr_cli.eval.runner import Crop, crop_window

CPU = InferenceOptions(device="cpu", tile=0, precision="fp32")


def _photos(root: Path) -> list[Path]:
    """Two small photos: a JPEG and a PNG whose name has a space."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:56]
    data = (np.stack([xx * 4, yy * 6, (xx + yy) * 3], axis=-1) + rng.integers(0, 30, (40, 56, 3))).clip(0, 255)
    data[10:20, 30:40] = 255 - data[10:20, 30:40]  # an edge to find
    a, b = root / "a.jpg", root / "b c.png"
    Image.fromarray(data.astype(np.uint8)).save(a, quality=90)
    Image.fromarray(data[::-1].astype(np.uint8)).save(b)
    return [a, b]


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_writes_outputs_crops_report_and_page(tmp_path: Path, tiny_weights: Path, one_thread) -> None:
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    seen: list[str] = []
    result = compare_photos(
        [tmp_path / "in"],
        ["bicubic", str(tiny_weights)],
        out,
        options=CPU,
        offline=True,
        progress=lambda done, total, name: seen.append(f"{done}/{total} {name}"),
    )
    assert seen == ["1/2 a", "2/2 b_c"] and result.labels == ["bicubic", "tiny"] and not result.failed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "compare.json",
        "crops/a.png",
        "crops/b_c.png",
        "full/a/bicubic.png",
        "full/a/input.png",
        "full/a/tiny.png",
        "full/b_c/bicubic.png",
        "full/b_c/input.png",
        "full/b_c/tiny.png",
        "index.html",
    ]
    assert np.array_equal(_read(out / "full/b_c/input.png"), _read(photos[1]))
    from spsr_cli.io.imresize import bicubic_upscale

    assert np.array_equal(_read(out / "full/a/bicubic.png"), bicubic_upscale(_read(photos[0]), 4))
    assert _read(out / "full/a/tiny.png").shape == (160, 224, 3)
    # the crop figure: input (nearest x4), bicubic, tiny; 128-pixel window shown 2x, side by side
    figure = _read(out / "crops/a.png")
    assert figure.shape[1] == 3 * 256 + 4 * 4 and figure.shape[0] > 256
    doc = json.loads((out / "compare.json").read_text())
    assert [m["label"] for m in doc["models"]] == ["bicubic", "tiny"]
    first = doc["photos"][0]
    assert first["size"] == [56, 40] and [o["label"] for o in first["outputs"]] == ["bicubic", "tiny"]
    assert all(o["seconds"] >= 0 for o in first["outputs"])

    page = (out / "index.html").read_text()
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert "http://" not in page and "https://" not in page and "//" not in markup  # no external URL
    sources = re.findall(r'src="([^"]+)"', page)
    assert "b_c/input.png" in " ".join(sources) and all((out / s).is_file() for s in sources)  # relative paths
    assert page.count('class="pair"') == 2  # one pair of models per photo
    assert "bicubic (" in page and "tiny (" in page  # each model's time


def test_most_detailed_crop_or_the_one_given_in_input_pixels(tmp_path: Path, one_thread) -> None:
    photos = _photos(tmp_path / "in")
    result = compare_photos(photos[:1], ["bicubic"], tmp_path / "o1", options=CPU)
    lr = _read(photos[0])
    enlarged = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
    x, y, size = crop_window(enlarged, Crop(size=128))
    figure = _read(result.out_dir / "crops/a.png")
    expected = np.repeat(np.repeat(enlarged[y : y + size, x : x + size], 2, axis=0), 2, axis=1)
    assert np.array_equal(figure[4 : 4 + 256, 4 : 4 + 256], expected)
    # one model: the page's slider is input vs that model
    assert 'data-left="input" data-right="bicubic"' in (result.out_dir / "index.html").read_text()

    given = compare_photos(photos[:1], ["bicubic"], tmp_path / "o2", options=CPU, crop=Crop(x=2, y=3, size=10))
    figure = _read(given.out_dir / "crops/a.png")
    panel = np.repeat(np.repeat(enlarged[12:52, 8:48], 2, axis=0), 2, axis=1)
    assert np.array_equal(figure[4 : 4 + 80, 4 : 4 + 80], panel)


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    with pytest.raises(UsageError, match="--force"):
        compare_photos(photos, ["bicubic"], out, options=CPU)
    assert (out / "index.html").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "notes.txt"]  # nothing written
    compare_photos(photos, ["bicubic"], out, options=CPU, force=True)
    assert "spsr compare" in (out / "index.html").read_text() and (out / "notes.txt").read_text() == "mine too"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        compare_photos(photos, ["bicubic"], tmp_path / "file", options=CPU)


def test_an_input_photo_is_never_overwritten_even_with_force(tmp_path: Path) -> None:
    photo = _photos(tmp_path / "in")[0]
    target = tmp_path / "out" / "full" / "input" / "input.png"  # photo "input" -> full/input/input.png
    target.parent.mkdir(parents=True)
    shutil.copy(photo, target)
    with pytest.raises(UsageError, match="would overwrite the input photo"):
        compare_photos([target], ["bicubic"], tmp_path / "out", options=CPU, force=True)


def test_bad_photo_fails_alone_and_names(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = compare_photos([tmp_path / "in"], ["bicubic"], tmp_path / "out", options=CPU)
    assert [p.name for p in result.failed] == ["broken"] and len(result.photos) == 3
    assert "broken.png" in (tmp_path / "out" / "index.html").read_text()
    with pytest.raises(UsageError, match="does not exist"):
        compare_photos([tmp_path / "nope.jpg"], ["bicubic"], tmp_path / "o2")
    with pytest.raises(UsageError, match="--model"):
        compare_photos(photos, [], tmp_path / "o3")
    assert photo_names([Path("x/a.jpg"), Path("y/a.png"), Path("my photo.jpg")]) == ["a", "a-2", "my_photo"]


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket

        self._ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def until(self, expression: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.1)

    def rect(self, selector: str) -> dict:
        """The element's box in page coordinates (CSS pixels)."""
        return self.js(  # type: ignore[return-value]
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect(); "
            "return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height, "
            "top: r.y, left: r.x}; })()"
        )

    def shot(self, rect: dict) -> np.ndarray:
        """Screenshot of a page-coordinate box, H x W x 3 int16."""
        clip = {k: rect[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(np.int16)

    def close(self) -> None:
        self._ws.close()


@pytest.fixture
def browser_page(tmp_path: Path):
    """Open a file in headless Chromium; yields a function path -> :class:`_DevTools` on that page."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary installed (Debian: apt-get install chromium)")
    pytest.importorskip("websocket", reason="the websocket-client package drives the browser")
    profile = tmp_path / "chromium-profile"
    procs: list[subprocess.Popen] = []
    clients: list[_DevTools] = []

    def open_page(path: Path) -> _DevTools:
        proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-extensions",
                "--force-device-scale-factor=1",
                "--window-size=1200,1000",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                path.as_uri(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                pages = [t for t in json.load(reply) if t.get("type") == "page" and t["url"].startswith("file:")]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert pages, "chromium opened no page"
        client = _DevTools(pages[0]["webSocketDebuggerUrl"])
        clients.append(client)
        return client

    yield open_page
    for client in clients:
        client.close()
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_page_in_headless_chromium_loads_images_and_the_slider_moves(
    tmp_path: Path, tiny_weights: Path, browser_page, one_thread
) -> None:
    _photos(tmp_path / "in")
    out = tmp_path / "out"
    compare_photos([tmp_path / "in" / "a.jpg"], ["bicubic", str(tiny_weights)], out, options=CPU, offline=True)
    left, right = _read(out / "full/a/bicubic.png").astype(np.int16), _read(out / "full/a/tiny.png").astype(np.int16)
    assert np.abs(left - right).mean() > 10  # the two models look different

    page = browser_page(out / "index.html")
    page.until(  # our document (not the blank one before it), fully loaded
        "document.querySelector('.pair') !== null && document.readyState === 'complete'"
        " && Array.from(document.images).every(i => i.complete)"
    )
    sizes = page.js("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(sizes) == 1 + 2 + 3 and all(width > 0 for _, width in sizes), sizes  # crop, slider pair, full outputs

    page.js("document.querySelector('.pair').scrollIntoView()")
    slider = page.rect(".pair .slider")
    assert round(slider["width"]) == 224 and round(slider["height"]) == 160  # shown 1:1
    width = 224

    def matches(shot: np.ndarray, image: np.ndarray, lo: float, hi: float) -> bool:
        cols = slice(int(lo * width), int(hi * width))
        return float(np.abs(shot[:, cols] - image[:, cols]).mean()) < 3.0

    before = page.shot(slider)
    assert page.js("document.querySelector('.pair input').value") == "50"
    assert matches(before, left, 0.0, 0.45) and matches(before, right, 0.55, 1.0)

    # a user clicks the slider's track near its right end: the left model now fills up to there
    track = page.rect(".pair input")  # mouse events take viewport coordinates
    x, y = track["left"] + 0.9 * track["width"], track["top"] + track["height"] / 2
    for kind in ("mousePressed", "mouseReleased"):
        page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    value = int(page.js("document.querySelector('.pair input').value"))
    assert 80 <= value <= 95
    after = page.shot(slider)
    assert matches(after, left, 0.0, 0.75) and not matches(after, right, 0.55, 0.75)
    assert matches(after, right, value / 100 + 0.03, 1.0)
