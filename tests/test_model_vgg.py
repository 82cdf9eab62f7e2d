"""VGG16/19 trunks: torchvision's layer indices, cut points before or after a ReLU."""

from __future__ import annotations

import pytest
from torch import nn

from spsr_cli.model.vgg import VGGFeatures


def test_vgg_layouts_follow_torchvision_indices() -> None:
    vgg19 = VGGFeatures(depth=19)
    assert len(vgg19.features) == 35 and isinstance(vgg19.features[34], nn.Conv2d)  # conv5_4, before ReLU
    assert len(vgg19.conv_layers()) == 16
    assert [i for i, m in enumerate(vgg19.features) if isinstance(m, nn.MaxPool2d)] == [4, 9, 18, 27]
    vgg16 = VGGFeatures(depth=16, last_layer="conv5_3")
    assert len(vgg16.features) == 29 and len(vgg16.conv_layers()) == 13
    relu = VGGFeatures(depth=16, last_layer="relu2_2")
    assert isinstance(relu.features[-1], nn.ReLU) and len(relu.features) == 9
    with pytest.raises(ValueError, match="conv5_4"):
        VGGFeatures(depth=16, last_layer="conv5_4")
    with pytest.raises(ValueError):
        VGGFeatures(depth=11)
