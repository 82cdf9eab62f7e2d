"""The neural structure extractor: shape contract, 4x downsampling, receptive field, heads."""

from __future__ import annotations

import pytest
import torch

from spsr_cli.model.nse import (
    CONTEXT_OFFSETS,
    JIGSAW_CLASSES,
    RECEPTIVE_FIELD,
    STRIDE,
    ContrastiveHead,
    JigsawHead,
    NSEConfig,
    NSENet,
    non_overlap_distance,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def test_output_is_4x_downsampled_non_negative_features() -> None:
    net = NSENet(NSEConfig(channels=8))
    y = net(torch.rand(2, 3, 40, 24))
    assert y.shape == (2, 8, 10, 6) and (y >= 0).all()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and [c.stride[0] for c in convs].count(2) == 2


def test_receptive_field_is_31_pixels_centred_on_4i() -> None:
    net = NSENet(NSEConfig(channels=4))
    with torch.no_grad():  # positive weights: every pixel of the receptive field reaches the output
        for p in net.parameters():
            p.abs_()
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    net(x)[0, :, 10, 7].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (40 - 15, 40 + 15)
    assert (cols.min().item(), cols.max().item()) == (28 - 15, 28 + 15)
    assert RECEPTIVE_FIELD == 31 and STRIDE == 4 and non_overlap_distance() == 8


def test_skip_connections_add_the_block_input() -> None:
    net = NSENet(NSEConfig(channels=4))
    with torch.no_grad():  # zeroing the last conv of each residual block leaves only the skips
        for conv in (net.conv3, net.conv6):
            conv.weight.zero_()
            conv.bias.fill_(-1.0)
    x = torch.rand(1, 3, 16, 16)
    h = torch.relu(net.conv4(torch.relu(net.conv1(x - 0.5))))
    torch.testing.assert_close(net(x), h)


def test_bad_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        NSENet()(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="unknown NSEConfig"):
        NSEConfig.from_dict({"channels": 8, "depth": 3})
    assert NSEConfig.from_dict(NSEConfig(channels=16).to_dict()) == NSEConfig(channels=16)


def test_heads_map_to_feature_and_permutation_spaces() -> None:
    head = ContrastiveHead(8, 16, ("horizontal", "cross"))
    assert head(torch.rand(5, 2 * 8), "horizontal").shape == (5, 8)
    assert head(torch.rand(5, 4 * 8), "cross").shape == (5, 8)
    assert len(CONTEXT_OFFSETS["cross"]) == 4
    jig = JigsawHead(8, 16)
    assert jig(torch.rand(3, 32)).shape == (3, JIGSAW_CLASSES)
    assert sum(isinstance(m, torch.nn.Linear) for m in jig.modules()) == 3
    with pytest.raises(ValueError, match="unknown contrastive variant"):
        ContrastiveHead(8, 16, ("diagonal",))
