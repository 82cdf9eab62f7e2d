"""``from spsr_cli import upscale``: PIL images and NumPy arrays in, the same kind out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

import spsr_cli
from spsr_cli.engine import api

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def tiny(tiny_weights, one_thread):
    api._upscaler.cache_clear()
    yield str(tiny_weights)
    api._upscaler.cache_clear()


def test_pil_in_pil_out(tiny):
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    out = spsr_cli.upscale(image, model=tiny, precision="fp32")
    assert isinstance(out, PIL.Image.Image) and out.mode == "RGB" and out.size == (48, 40)
    rgba = PIL.Image.fromarray(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8))
    assert spsr_cli.upscale(rgba, model=tiny, outscale=2).mode == "RGBA"


def test_arrays_keep_their_layout_and_dtype(tiny):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = spsr_cli.upscale(rgb, model=tiny, precision="fp32", tile=8)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    whole = spsr_cli.upscale(rgb, model=tiny, precision="fp32", tile=0)
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1  # tiled as the engine tiles: seamless
    gray = spsr_cli.upscale(rng.random((10, 12), dtype=np.float32), model=tiny)
    assert gray.shape == (40, 48) and gray.dtype == np.float32 and 0 <= gray.min() <= gray.max() <= 1
    deep = spsr_cli.upscale(rng.integers(0, 65536, (10, 12, 4), dtype=np.uint16), model=tiny)
    assert deep.shape == (40, 48, 4) and deep.dtype == np.uint16


def test_the_model_is_loaded_once(tiny, monkeypatch):
    import spsr_cli.weights.loader as loader

    image = np.zeros((8, 8, 3), np.uint8)
    spsr_cli.upscale(image, model=tiny)
    monkeypatch.setattr(loader, "load_generator", lambda *a, **k: pytest.fail("loaded again"))
    spsr_cli.upscale(image, model=tiny)


def test_bad_inputs_are_named(tiny):
    from spsr_cli.errors import UsageError

    with pytest.raises(UsageError, match="shape"):
        spsr_cli.upscale(np.zeros((4, 4, 2), np.uint8), model=tiny)
    with pytest.raises(UsageError, match="int64"):
        spsr_cli.upscale(np.zeros((4, 4, 3), np.int64), model=tiny)
    with pytest.raises(UsageError, match="outscale"):
        spsr_cli.upscale(np.zeros((4, 4, 3), np.uint8), model=tiny, outscale=float("inf"))


def test_the_readme_example_runs(tmp_path, monkeypatch, one_thread):
    """The README's first Python API block, as written, with the shipped default model."""
    text = README.read_text()
    block = re.search(r"## Python API\n+```python\n(.*?)```", text, re.S).group(1)
    assert "from spsr_cli import upscale" in block
    monkeypatch.chdir(tmp_path)
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save("photo.png")
    api._upscaler.cache_clear()
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert PIL.Image.open("photo_x4.png").size == (80, 64)


@pytest.mark.parametrize(
    "bad",
    [
        {"tile": "big"},
        {"tile": 1.5},
        {"tile": True},
        {"device": 5},
        {"model": 5},
        {"tile_overlap": "x"},
        {"tile_overlap": -1},
        {"max_memory": 0},
    ],
)
def test_bad_arguments_are_usage_errors_naming_them(bad):
    """Issue 26 (low): the Python API's bad arguments raised TypeError/ValueError/AttributeError from inside."""
    import numpy as np

    from spsr_cli.errors import UsageError

    (name,) = bad
    with pytest.raises(UsageError, match=re.escape(f"upscale({name}=")):
        spsr_cli.upscale(np.zeros((8, 8, 3), np.uint8), **bad)
