"""VGG-style discriminator: topology, shapes and input-size checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spsr_cli.train.discriminator import VGGDiscriminator, feature_size


def test_default_topology_matches_the_papers() -> None:
    d = VGGDiscriminator()
    convs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2] * 5
    assert [c.kernel_size[0] for c in convs] == [3, 4] * 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.features) == 9  # all but the first conv
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    linears = [m for m in d.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8192, 100), (100, 1)]


def test_forward_shape_and_gradient() -> None:
    d = VGGDiscriminator(base_channels=8)
    x = torch.rand(2, 3, 128, 128, requires_grad=True)
    out = d(x)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_padding_two_gradient_maps_fit_an_input_size_130_discriminator() -> None:
    assert feature_size(128) == feature_size(130) == 4
    d = VGGDiscriminator(base_channels=4, input_size=130)
    assert d.classifier[0].in_features == 32 * 4 * 4
    assert d(torch.rand(2, 3, 130, 130)).shape == (2, 1)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 128, 96), (1, 1, 128, 128), (3, 128, 128)])
def test_wrong_patch_shape_is_a_clear_error(shape: tuple[int, ...]) -> None:
    d = VGGDiscriminator(base_channels=4)
    with pytest.raises(ValueError, match="128 x 128"):
        d(torch.rand(*shape))


def test_too_small_input_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="too small"):
        VGGDiscriminator(input_size=16)
