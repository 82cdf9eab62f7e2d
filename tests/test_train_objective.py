"""The SPSR objective: which terms each stage has, their weights, and where gradients go."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spsr_cli.model.gradient import gradient_map
from spsr_cli.train.config import load_config
from spsr_cli.train.discriminator import VGGDiscriminator
from spsr_cli.train.objective import LossWeights, SPSRObjective

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


PAPER = LossWeights(pixel=0.01, perceptual=1.0, gan=0.005, gradient_pixel=0.01, gradient_gan=0.005, branch=0.5)


def _tiny_backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))


def _discriminators() -> tuple[nn.Module, nn.Module]:
    return VGGDiscriminator(base_channels=4, input_size=32), VGGDiscriminator(base_channels=4, input_size=34)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    branch = torch.rand(2, 3, 32, 32, requires_grad=True)
    return sr, branch, torch.rand(2, 3, 32, 32)


def test_stage_weights_come_from_the_config() -> None:
    cfg = load_config(None, ["psnr_loss.pixel=2", "psnr_loss.branch=3", "loss.gradient_variance=0.2"])
    assert LossWeights.for_stage(cfg, "psnr") == LossWeights(pixel=2.0, branch=3.0)
    gan = LossWeights.for_stage(cfg, "gan")
    assert gan.gradient_variance == 0.2 and gan.pixel == 0.01 and gan.adversarial


def test_psnr_stage_is_pixel_and_branch_l1() -> None:
    objective = SPSRObjective(weights=LossWeights(pixel=1.0, branch=0.5))
    sr, branch, hr = _inputs()
    total, terms = objective.generator_loss(sr, branch, hr)
    assert set(terms) == {"pixel", "branch"}
    expected = F.l1_loss(sr, hr) + 0.5 * F.l1_loss(branch, gradient_map(hr, 1))
    torch.testing.assert_close(total, expected)


def test_full_objective_has_every_term_and_spares_the_discriminators() -> None:
    d_img, d_grad = _discriminators()
    weights = LossWeights(**{**PAPER.__dict__, "gradient_variance": 0.1, "second_order": 0.1})
    objective = SPSRObjective(weights=weights, perceptual_backbone=_tiny_backbone(), d_image=d_img, d_gradient=d_grad)
    sr, branch, hr = _inputs()
    total, terms = objective.generator_loss(sr, branch, hr)
    assert set(terms) == {
        "pixel",
        "perceptual",
        "gan",
        "gradient_pixel",
        "gradient_gan",
        "branch",
        "gradient_variance",
        "second_order",
    }
    torch.testing.assert_close(total, sum(terms.values()))
    torch.testing.assert_close(terms["pixel"], 0.01 * F.l1_loss(sr, hr))
    torch.testing.assert_close(terms["gradient_pixel"], 0.01 * F.mse_loss(gradient_map(sr, 2), gradient_map(hr, 2)))
    total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0 and branch.grad is not None
    assert all(p.grad is None for p in [*d_img.parameters(), *d_grad.parameters()])
    assert all(p.requires_grad for p in d_img.parameters())  # restored after the generator step


def test_discriminator_loss_trains_only_the_discriminators() -> None:
    d_img, d_grad = _discriminators()
    objective = SPSRObjective(weights=PAPER, perceptual_backbone=_tiny_backbone(), d_image=d_img, d_gradient=d_grad)
    sr, _, hr = _inputs()
    total, logs = objective.discriminator_losses(sr, hr)
    assert {"d_image", "d_gradient"} <= set(logs)
    total.backward()
    assert sr.grad is None
    assert all(p.grad is not None for p in d_img.parameters()) and all(p.grad is not None for p in d_grad.parameters())


def test_zero_weight_switches_a_term_off_and_missing_parts_are_refused() -> None:
    d_img, _ = _discriminators()
    objective = SPSRObjective(weights=LossWeights(pixel=1.0, gan=0.1), d_image=d_img)
    sr, branch, hr = _inputs()
    _, terms = objective.generator_loss(sr, branch, hr)
    assert set(terms) == {"pixel", "gan"}
    _, logs = objective.discriminator_losses(sr, hr)
    assert "d_gradient" not in logs
    with pytest.raises(ValueError, match="perceptual"):
        SPSRObjective(weights=LossWeights(perceptual=1.0))
    with pytest.raises(ValueError, match="gradient discriminator"):
        SPSRObjective(weights=LossWeights(gradient_gan=1.0))


# ---- SPSR-P / SPSR-J: structure terms -------------------------------------------------


def _structure():
    from spsr_cli.model.nse import NSEConfig, NSENet
    from spsr_cli.train.structure import FeatureDiscriminator, StructureFeatures

    torch.manual_seed(1)
    return StructureFeatures(NSENet(NSEConfig(channels=6))), FeatureDiscriminator(
        in_channels=6, base_channels=4, input_size=8
    )


def test_presets_swap_the_gradient_space_terms_for_the_structure_terms() -> None:
    g = LossWeights.for_stage(load_config(None, ["loss.structure_pixel=0.3"]), "gan")
    assert g.gan == 0.005 and g.gradient_pixel == 0.01 and g.structure_pixel == 0 and g.structure_gan == 0
    for preset in ("spsr-p", "spsr-j"):
        w = LossWeights.for_stage(load_config(None, [f"loss.preset={preset}", "loss.structure_pixel=0.3"]), "gan")
        assert (w.gan, w.gradient_pixel, w.gradient_gan) == (0, 0, 0)
        assert (w.pixel, w.perceptual, w.branch, w.structure_pixel, w.structure_gan) == (0.01, 1.0, 0.5, 0.3, 0.005)
    assert LossWeights.for_stage(load_config(None, ["loss.preset=spsr-p"]), "psnr") == LossWeights(
        pixel=1.0, branch=0.5
    )
    with pytest.raises(Exception, match="loss.preset"):
        load_config(None, ["loss.preset=spsr-x"])


def test_structure_terms_match_a_separate_computation() -> None:
    import numpy as np

    structure, d_str = _structure()
    d_str.eval()  # batch norm in eval mode: the same logits on every call
    objective = SPSRObjective(
        weights=LossWeights(structure_pixel=0.7, structure_gan=0.05), structure=structure, d_structure=d_str
    )
    sr, branch, hr = _inputs()
    total, terms = objective.generator_loss(sr, branch, hr)
    assert set(terms) == {"structure_pixel", "structure_gan"}
    with torch.no_grad():
        f_sr, f_hr = (F.normalize(structure.nse(x), dim=1, eps=1e-6) for x in (sr, hr))
        real, fake = d_str(f_hr).numpy().ravel(), d_str(f_sr).numpy().ravel()
    assert float(terms["structure_pixel"]) == pytest.approx(0.7 * float((f_sr - f_hr).abs().mean()), rel=1e-5)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    bce = lambda z, t: -np.mean(t * np.log(sig(z)) + (1 - t) * np.log(1 - sig(z)))  # noqa: E731
    ragan_g = (bce(real - fake.mean(), 0.0) + bce(fake - real.mean(), 1.0)) / 2
    assert float(terms["structure_gan"]) == pytest.approx(0.05 * ragan_g, rel=1e-5)
    total.backward()
    assert sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*d_str.parameters(), *structure.parameters()])
    ragan_d = (bce(real - fake.mean(), 1.0) + bce(fake - real.mean(), 0.0)) / 2
    loss_d, logs = objective.discriminator_losses(sr, hr)
    assert float(logs["d_structure"]) == pytest.approx(ragan_d, rel=1e-5)
    loss_d.backward()
    assert all(p.grad is not None for p in d_str.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="structure extractor"):
        SPSRObjective(weights=LossWeights(structure_pixel=1.0))
    with pytest.raises(ValueError, match="feature discriminator"):
        SPSRObjective(weights=LossWeights(structure_gan=1.0), structure=structure)
