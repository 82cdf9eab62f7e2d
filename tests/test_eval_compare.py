"""spsr compare: outputs, crops, the static page (checked in headless Chromium where installed), overwrite policy."""

from __future__ import annotations

import base64
import io
import json
import math
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
    # the crop figure: input (nearest x4), bicubic, tiny; the 64-pixel default window (256 output pixels)
    # is cut to the 160-pixel-high photo, and a window up to 160 pixels is shown 2x, side by side
    figure = _read(out / "crops/a.png")
    assert figure.shape[1] == 3 * 320 + 4 * 4 and figure.shape[0] > 320
    doc = json.loads((out / "compare.json").read_text())
    assert [m["label"] for m in doc["models"]] == ["bicubic", "tiny"]
    first = doc["photos"][0]
    assert first["size"] == [56, 40] and [o["label"] for o in first["outputs"]] == ["bicubic", "tiny"]
    assert all(o["seconds"] >= 0 for o in first["outputs"]) and first["crop_window"]["size"] == 160
    tiny = doc["models"][1]["timing"]  # over both photos, upscaling alone
    spent = sum(p["outputs"][1]["seconds"] for p in doc["photos"])
    assert tiny["upscale_seconds"] == pytest.approx(spent, abs=1e-3)
    assert tiny["output_megapixels"] == pytest.approx(2 * 224 * 160 / 1e6, abs=1e-4)

    page = (out / "index.html").read_text()
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert "http://" not in page and "https://" not in page and "//" not in markup  # no external URL
    sources = re.findall(r'src="([^"]+)"', page)
    assert "b_c/input.png" in " ".join(sources) and all((out / s).is_file() for s in sources)  # relative paths
    assert page.count('class="view"') == 2  # one viewer per photo
    assert page.count('<select class="pick pick-a">') == 2 and page.count("<figure data-choice=") == 2 * 3
    assert "s/MP" in page and "warm-up s" in page  # each model's time, its one-off costs apart


def test_most_detailed_crop_or_the_one_given_in_input_pixels(tmp_path: Path, one_thread) -> None:
    photos = _photos(tmp_path / "in")
    result = compare_photos(photos[:1], ["bicubic"], tmp_path / "o1", options=CPU)
    lr = _read(photos[0])
    enlarged = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
    x, y, size = crop_window(enlarged, Crop(size=64 * 4))
    assert size == 160 and result.photos[0].window == (x, y, size)
    figure = _read(result.out_dir / "crops/a.png")
    expected = np.repeat(np.repeat(enlarged[y : y + size, x : x + size], 2, axis=0), 2, axis=1)
    assert np.array_equal(figure[4 : 4 + 320, 4 : 4 + 320], expected)
    # one model: the pickers start at input (A) vs that model (B); the page's strip starts at the window
    page = (result.out_dir / "index.html").read_text()
    assert re.search(r'class="pick pick-a"><option value="input"[^>]* selected>', page)
    assert re.search(r'class="pick pick-b">.*<option value="bicubic"[^>]* selected>', page)
    assert f'data-x="{x}" data-y="{y}" data-win="160" data-mag="2"' in page

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


def test_page_escapes_file_names(tmp_path: Path) -> None:
    photo = _photos(tmp_path / "in")[0]
    odd = photo.rename(tmp_path / "in" / '<img src=x onerror="alert(1)">&.jpg')
    compare_photos([odd], ["bicubic"], tmp_path / "out", options=CPU)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;.jpg" in page


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
        """Screenshot of a page-coordinate box inside the viewport, H x W x 3 int16 (capturing beyond the
        viewport would resize it: the page would reflow under the box)."""
        clip = {k: math.floor(rect[k] + 0.5) for k in ("x", "y", "width", "height")} | {"scale": 1}  # as painted
        data = self.call("Page.captureScreenshot", format="png", clip=clip)["data"]
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


def test_page_in_headless_chromium_pickers_zoom_pan_and_crop_strip(
    tmp_path: Path, tiny_weights: Path, browser_page, one_thread
) -> None:
    """Issue 26: the pickers change the images, zoom and pan keep A and B on the same place, a click moves
    the crop strip's point; every check reads the screen's pixels against the written files."""
    photo = tmp_path / "a.png"  # noise: nearest, bicubic and the tiny model differ everywhere
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    compare_photos(
        [photo],
        ["bicubic", str(tiny_weights)],
        out,
        options=CPU,
        offline=True,
        crop=Crop(size=16),  # 64 output pixels, shown 2x
    )
    shown = {
        "input": np.repeat(np.repeat(_read(out / "full/a/input.png"), 4, axis=0), 4, axis=1).astype(np.int16),
        "bicubic": _read(out / "full/a/bicubic.png").astype(np.int16),
        "tiny": _read(out / "full/a/tiny.png").astype(np.int16),
    }
    for one, other in (("input", "bicubic"), ("bicubic", "tiny"), ("input", "tiny")):
        assert np.abs(shown[one] - shown[other]).mean() > 10  # each pair looks different

    page = browser_page(out / "index.html")
    page.until(  # our document (not the blank one before it), fully loaded
        "document.querySelector('.cmp') !== null && document.readyState === 'complete'"
        " && Array.from(document.images).every(i => i.complete)"
    )
    sizes = page.js("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(sizes) == 2 + 3 and all(width > 0 for _, width in sizes), sizes  # A and B; the strip's 3

    def state() -> dict[str, float]:
        return {k: float(v) for k, v in page.js("Object.assign({}, document.querySelector('.cmp').dataset)").items()}

    def click(x: float, y: float) -> None:  # viewport coordinates
        for kind in ("mousePressed", "mouseReleased"):
            page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click_on(selector: str) -> None:
        box = page.rect(selector)
        click(box["left"] + box["width"] / 2, box["top"] + box["height"] / 2)

    def pick(side: str, choice: str) -> None:
        page.js(
            f"(() => {{ const s = document.querySelector('select.pick-{side}'); s.value = '{choice}';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        width = 56 if choice == "input" else 224
        page.until(f"(i => i.complete && i.naturalWidth === {width})(document.querySelector('.view img.{side}'))")

    def expected(choice: str, st: dict[str, float]) -> np.ndarray:
        """What the view should show of ``choice`` at the state's zoom and offsets."""
        zoom, x, y = int(st["zoom"]), int(st["offsetX"]), int(st["offsetY"])
        big = np.repeat(np.repeat(shown[choice], zoom, axis=0), zoom, axis=1)
        return big[-y : -y + 160, -x : -x + 224]

    def line() -> float:
        return float(page.js("document.querySelector('.split').value")) / 100

    def sides(a: str, b: str) -> None:
        """A left of the line, B right of it, both at the same zoom and offsets (aligned)."""
        st, shot, split = state(), page.shot(page.rect(".view")), line()
        left, right = slice(0, int((split - 0.05) * 224)), slice(int((split + 0.05) * 224), 224)
        assert float(np.abs(shot[:, left] - expected(a, st)[:, left]).mean()) < 3.0, ("A", a, st)
        assert float(np.abs(shot[:, right] - expected(b, st)[:, right]).mean()) < 3.0, ("B", b, st)

    page.js("document.querySelector('.view').scrollIntoView()")
    view = page.rect(".view")
    assert round(view["width"]) == 224 and round(view["height"]) == 160 and state()["zoom"] == 1  # fits at 1:1
    click_on(".mark")  # hide the crop window's box to compare pixels
    assert page.js("document.querySelector('.box').classList.contains('hidden')")
    sides("bicubic", "tiny")  # two models: the first two, A and B

    # the pickers change the images; the input is enlarged by nearest neighbour
    pick("a", "input")
    sides("input", "tiny")
    pick("b", "bicubic")
    sides("input", "bicubic")

    # zoom 2x and 4x (on the chosen point), and pan: both sides stay on the same pixels
    click_on('button[data-zoom="2"]')
    assert state()["zoom"] == 2 and page.js("document.querySelector('.view').classList.contains('pixels')")
    sides("input", "bicubic")
    before = state()
    x0, y0 = view["left"] + 60, view["top"] + 50
    page.call("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left", clickCount=1)
    for step in range(1, 6):
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + 6 * step, y=y0 + 4 * step, button="left")
    page.call("Input.dispatchMouseEvent", type="mouseReleased", x=x0 + 30, y=y0 + 20, button="left", clickCount=1)
    panned = state()
    assert panned["offsetX"] != before["offsetX"] and panned["pointX"] == before["pointX"]  # a drag: no new point
    sides("input", "bicubic")
    click_on('button[data-zoom="4"]')
    assert state()["zoom"] == 4
    sides("input", "bicubic")

    # a click on the view moves the strip's point; the strip shows that window of the input and every model
    st = state()
    click(view["left"] + 150, view["top"] + 30)
    moved = state()
    point = (int((150 - st["offsetX"]) // 4), int((30 - st["offsetY"]) // 4))
    assert (moved["pointX"], moved["pointY"]) == point and (moved["pointX"], moved["pointY"]) != (
        st["pointX"],
        st["pointY"],
    )
    cx, cy = int(moved["cropX"]), int(moved["cropY"])
    assert moved["cropSize"] == 64 and (cx, cy) == (
        min(max(0, point[0] - 32), 224 - 64),
        min(max(0, point[1] - 32), 96),
    )
    for choice, image in shown.items():
        panel = page.shot(page.rect(f'.strip figure[data-choice="{choice}"] .win'))
        window = np.repeat(np.repeat(image[cy : cy + 64, cx : cx + 64], 2, axis=0), 2, axis=1)
        assert float(np.abs(panel - window).mean()) < 3.0, choice

    # the wheel zooms around the pointer (4x -> 8x): the photo's point under it stays there
    at = (100, 80)  # in the view
    page.call(
        "Input.dispatchMouseEvent",
        type="mouseWheel",
        x=view["left"] + at[0],
        y=view["top"] + at[1],
        deltaX=0,
        deltaY=-120,
    )
    page.until("document.querySelector('.cmp').dataset.zoom === '8'")
    wheeled = state()
    for axis, offset in enumerate(("offsetX", "offsetY")):  # within the half pixel that snapping moves
        assert abs((at[axis] - wheeled[offset]) / 8 - (at[axis] - moved[offset]) / 4) <= 0.5 / 8, (moved, wheeled)
    sides("input", "bicubic")

    # dragging the line's handle moves the line (and chooses no point)
    handle = page.rect(".handle")
    hx, hy = handle["left"] + handle["width"] / 2, handle["top"] + handle["height"] / 2
    page.call("Input.dispatchMouseEvent", type="mousePressed", x=hx, y=hy, button="left", clickCount=1)
    for step in range(1, 6):
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=hx - 11 * step, y=hy, button="left")
    page.call("Input.dispatchMouseEvent", type="mouseReleased", x=hx - 55, y=hy, button="left", clickCount=1)
    assert abs(line() - (hx - 55 - view["left"]) / 224) < 0.01 and state()["pointX"] == moved["pointX"]
    sides("input", "bicubic")

    # keys on the view: X swaps A and B
    page.call("Input.dispatchKeyEvent", type="keyDown", key="x", code="KeyX", text="x")
    page.call("Input.dispatchKeyEvent", type="keyUp", key="x", code="KeyX")
    assert page.js("[document.querySelector('.pick-a').value, document.querySelector('.pick-b').value]") == [
        "bicubic",
        "input",
    ]
    page.until("document.querySelector('.view img.b').naturalWidth === 56")
    sides("bicubic", "input")

    # the slider's track, clicked near its right end: A now fills up to there
    track = page.rect(".split")
    click(track["left"] + 0.9 * track["width"], track["top"] + track["height"] / 2)
    assert 0.8 <= line() <= 0.95
    sides("bicubic", "input")

    shot = tmp_path / "compare-page.png"
    data = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    shot.write_bytes(base64.b64decode(data))
    assert Image.open(shot).size[0] >= 224
