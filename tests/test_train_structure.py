"""Structure losses: normalised features, pixel loss vs numpy, feature discriminator, preset extractors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsr_cli.model.nse import NSEConfig, NSENet
from spsr_cli.train.config import load_config
from spsr_cli.train.structure import FeatureDiscriminator, StructureFeatures, structure_pixel_loss

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


def test_presets_name_their_extractor() -> None:
    assert load_config(None, ["loss.preset=spsr-p"]).loss.nse_spec() == "nse-contrastive"
    assert load_config(None, ["loss.preset=spsr-j"]).loss.nse_spec() == "nse-jigsaw"
    assert load_config(None, ["loss.preset=spsr-j", "loss.nse=/x.safetensors"]).loss.nse_spec() == "/x.safetensors"
    assert load_config(None, []).loss.nse_spec() is None
