"""Structure losses: NSE files and names, normalised features, pixel loss vs numpy, feature discriminator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spsr_cli.errors import ChecksumMismatchError, CheckpointMismatchError, UnknownModelError
from spsr_cli.model.nse import NSEConfig, NSENet
from spsr_cli.train.config import load_config
from spsr_cli.train.structure import (
    FeatureDiscriminator,
    StructureFeatures,
    load_nse,
    read_nse_file,
    resolve_nse,
    structure_pixel_loss,
    write_nse_file,
)
from spsr_cli.weights.manifest import load_manifest


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def test_features_are_unit_vectors_and_the_pixel_loss_matches_numpy() -> None:
    torch.manual_seed(0)
    features = StructureFeatures(NSENet(NSEConfig(channels=6)))
    sr, hr = torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 16, 16)
    f_sr, f_hr = features(sr), features(hr)
    assert f_sr.shape == (2, 6, 4, 4)
    norms = f_sr.detach().norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-5)
    raw_sr, raw_hr = (features.nse(x).detach().numpy() for x in (sr, hr))
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)  # noqa: E731
    loss = structure_pixel_loss(f_sr, f_hr)
    assert float(loss.detach()) == pytest.approx(float(np.abs(unit(raw_sr) - unit(raw_hr)).mean()), rel=1e-5)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in features.parameters())  # the NSE stays frozen
    features.train()
    assert not features.nse.training


def test_feature_discriminator_adapts_its_stages_to_the_map() -> None:
    d32 = FeatureDiscriminator(in_channels=64, base_channels=4, input_size=32)  # 128-px crops
    assert d32(torch.rand(2, 64, 32, 32)).shape == (2, 1)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in d32.modules()) == 3
    d8 = FeatureDiscriminator(in_channels=8, base_channels=4, input_size=8)
    assert d8(torch.rand(3, 8, 8, 8)).shape == (3, 1)
    with pytest.raises(ValueError, match="raise data.crop_size"):
        FeatureDiscriminator(in_channels=8, input_size=4)
    with pytest.raises(ValueError, match="feature maps"):
        d8(torch.rand(1, 8, 16, 16))


def test_files_round_trip_and_foreign_files_are_refused(tmp_path: Path) -> None:
    net = NSENet(NSEConfig(channels=5))
    path = tmp_path / "n.safetensors"
    write_nse_file(path, net, metadata={"method": "jigsaw"})
    loaded, meta = read_nse_file(path)
    assert loaded.config == NSEConfig(channels=5) and meta["method"] == "jigsaw" and meta["dtype"] == "float32"
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert resolve_nse(str(path)) == path
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"architecture": "spsr"})
    with pytest.raises(CheckpointMismatchError, match="not an NSE"):
        read_nse_file(tmp_path / "other.safetensors")
    with pytest.raises(UnknownModelError, match="neither a file nor a known structure extractor"):
        load_nse("no-such-nse")


def test_a_registered_file_with_a_wrong_sha256_is_refused(tmp_path: Path) -> None:
    from spsr_cli.weights.manifest import local_manifest_path, write_json_atomic

    path = tmp_path / "x.safetensors"
    write_nse_file(path, NSENet(NSEConfig(channels=4)), metadata={})
    entry = {"name": "x-nse", "kind": "structure-extractor", "source": {"type": "file", "path": str(path), "sha256": "0" * 64}}
    write_json_atomic(local_manifest_path(), {"format_version": 1, "default": None, "models": [], "auxiliary": [entry]})
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        resolve_nse("x-nse")


def test_shipped_extractors_load_by_name_with_their_recorded_accuracy() -> None:
    shipped = {n: e for n, e in load_manifest().auxiliary.items() if e.get("kind") == "structure-extractor"}
    if not shipped:
        pytest.skip("no structure extractor is bundled in this checkout yet")
    assert {"nse-contrastive", "nse-jigsaw"} <= set(shipped)
    for name, entry in shipped.items():
        nse, meta = load_nse(name)
        assert json.loads(meta["config"]) == nse.config.to_dict()
        assert entry["method"] == meta["method"] and 0 < entry["accuracy"]["held_out"] <= 1
        assert all(v.dtype == torch.float32 for v in nse.state_dict().values())


def test_presets_name_their_extractor() -> None:
    assert load_config(None, ["loss.preset=spsr-p"]).loss.nse_spec() == "nse-contrastive"
    assert load_config(None, ["loss.preset=spsr-j"]).loss.nse_spec() == "nse-jigsaw"
    assert load_config(None, ["loss.preset=spsr-j", "loss.nse=/x.safetensors"]).loss.nse_spec() == "/x.safetensors"
    assert load_config(None, []).loss.nse_spec() is None
