"""SRVGGNetCompact: typed config, shapes at every scale, the nearest-upsampled base, exact receptive radius, cost."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

CONFIGS = [
    SRVGGConfig(nf=4, num_conv=2, scale=4),
    SRVGGConfig(nf=4, num_conv=1, scale=3, activation="relu"),
    SRVGGConfig(nf=4, num_conv=3, scale=2, activation="leakyrelu"),
    SRVGGConfig(nf=4, num_conv=0, scale=1),
]


def _ids(config: SRVGGConfig) -> str:
    return f"x{config.scale}-{config.activation}"


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_output_is_scale_times_any_input_size(config: SRVGGConfig) -> None:
    model = SRVGGNetCompact(config=config).eval()
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == config.num_conv + 2 and convs[-1].out_channels == 3 * config.scale**2
    with torch.no_grad():
        out = model(torch.rand(2, 3, 13, 7))
    assert out.shape == (2, 3, 13 * config.scale, 7 * config.scale)


def test_the_network_learns_a_residual_over_nearest_upscaling() -> None:
    model = SRVGGNetCompact(config=SRVGGConfig(nf=4, num_conv=1, scale=4)).eval()
    with torch.no_grad():
        model.body[-1].weight.zero_()
        model.body[-1].bias.zero_()
        x = torch.rand(1, 3, 5, 6)
        assert torch.equal(model(x), F.interpolate(x, scale_factor=4, mode="nearest"))


def test_published_key_names() -> None:
    keys = list(SRVGGNetCompact(config=SRVGGConfig(nf=4, num_conv=2)).state_dict())
    # Real-ESRGAN: convs at even body indices, PReLU slopes at odd ones, the last conv at 2 * num_conv + 2
    assert keys == [
        "body.0.weight",
        "body.0.bias",
        "body.1.weight",
        "body.2.weight",
        "body.2.bias",
        "body.3.weight",
        "body.4.weight",
        "body.4.bias",
        "body.5.weight",
        "body.6.weight",
        "body.6.bias",
    ]


def test_config_round_trips_and_refuses_bad_values() -> None:
    config = SRVGGConfig(nf=8, num_conv=4, scale=2, activation="relu")
    assert SRVGGConfig.from_dict(config.to_dict()) == config and config.architecture == "srvgg"
    assert config.to_dict()["activation"] == "relu"
    with pytest.raises(ValueError, match="activation must be one of prelu, relu, leakyrelu"):
        SRVGGConfig(activation="gelu")
    with pytest.raises(ValueError, match="scale must be 1 to 8"):
        SRVGGConfig(scale=16)
    with pytest.raises(ValueError, match="unknown SRVGGConfig fields"):
        SRVGGConfig.from_dict({"nf": 8, "upscale": 4})
    with pytest.raises(ValueError, match="in_channels .* must equal out_channels"):
        SRVGGNetCompact(config=SRVGGConfig(in_channels=1))
    with pytest.raises(TypeError):
        SRVGGNetCompact(SRVGGConfig())  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_macs_per_input_pixel_counts_every_convolution(config: SRVGGConfig) -> None:
    model = SRVGGNetCompact(config=config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 16, 16))
    assert config.macs_per_input_pixel * 16 * 16 == pytest.approx(counter.get_total_flops() / 2)


def test_realesr_general_x4v3_costs_what_the_issue_says() -> None:
    # 64 features, 32 convolutions, x4: about 76 GMAC per output megapixel, 15x less than RRDBNet's 1,120
    config = SRVGGConfig()
    assert config.macs_per_input_pixel / 16 * 1e6 == pytest.approx(75.6e9, rel=1e-3)


def test_exports_as_one_graph_for_any_input_size() -> None:
    """torch.export (what ONNX export traces with) takes the whole forward, with dynamic height and width."""
    model = SRVGGNetCompact(config=SRVGGConfig(nf=4, num_conv=2)).eval()
    height, width = torch.export.Dim("height", min=2, max=4096), torch.export.Dim("width", min=2, max=4096)
    program = torch.export.export(model, (torch.rand(1, 3, 12, 20),), dynamic_shapes={"x": {2: height, 3: width}})
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-6)


def test_receptive_radius_is_exact() -> None:
    """The gradient of one output pixel block is non-zero exactly on its receptive field."""
    config = SRVGGConfig(nf=2, num_conv=3, scale=2)
    model = SRVGGNetCompact(config=config).double().eval()
    radius = config.receptive_radius
    n = 2 * radius + 5
    c, s = n // 2, config.scale
    x = torch.rand(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    model(x)[..., c * s : (c + 1) * s, c * s : (c + 1) * s].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum(dim=(0, 1))).unbind(1)
    assert int(torch.maximum((ys - c).abs(), (xs - c).abs()).max()) == radius == 5
