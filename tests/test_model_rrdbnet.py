"""RRDBNet: typed config (x8/x4/x2/x1, Real-ESRGAN's pixel-unshuffle), shapes, receptive radius, compute count."""

from __future__ import annotations

import pytest
import torch

from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig

CONFIGS = [
    RRDBNetConfig(nf=4, nb=1, gc=2),
    RRDBNetConfig(nf=4, nb=1, gc=2, scale=8),
    RRDBNetConfig(nf=4, nb=1, gc=2, scale=2),
    RRDBNetConfig(nf=4, nb=1, gc=2, scale=2, unshuffle=2),
    RRDBNetConfig(nf=4, nb=1, gc=2, scale=1, unshuffle=4),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"x{c.scale}-u{c.unshuffle}")
def test_output_is_scale_times_any_input_size(config: RRDBNetConfig) -> None:
    model = RRDBNet(config=config).eval()
    assert model.conv_first.in_channels == 3 * config.unshuffle**2
    assert len([n for n, _ in model.named_children() if n.startswith("conv_up")]) == config.num_upsamples
    with torch.no_grad():
        out = model(torch.rand(2, 3, 13, 7))  # not multiples of the unshuffle: padded and cropped back
    assert out.shape == (2, 3, 13 * config.scale, 7 * config.scale)


def test_config_round_trips_and_refuses_bad_values() -> None:
    config = RRDBNetConfig(nf=8, nb=3, gc=4, scale=2, unshuffle=2)
    assert RRDBNetConfig.from_dict(config.to_dict()) == config and config.architecture == "rrdbnet"
    assert "architecture" not in config.to_dict()
    with pytest.raises(ValueError, match="scale must be 1, 2, 4 or 8"):
        RRDBNetConfig(scale=3)
    with pytest.raises(ValueError, match="no upsampling step"):
        RRDBNetConfig(scale=1)
    with pytest.raises(ValueError, match="unknown RRDBNetConfig fields"):
        RRDBNetConfig.from_dict({"nf": 8, "depth": 3})
    with pytest.raises(TypeError):
        RRDBNet(RRDBNetConfig())  # type: ignore[misc]  # keyword-only


def _conv_macs(model: torch.nn.Module, height: int, width: int) -> int:
    total = 0

    def hook(module: torch.nn.Conv2d, inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"x{c.scale}-u{c.unshuffle}")
def test_macs_per_input_pixel_counts_every_convolution(config: RRDBNetConfig) -> None:
    assert config.macs_per_input_pixel * 16 * 16 == pytest.approx(_conv_macs(RRDBNet(config=config), 16, 16), abs=1e-6)


def test_full_size_cost_is_the_published_figure() -> None:
    # ESRGAN / Real-ESRGAN x4plus: 73.4 GMAC for a 64 x 64 input (1.12 TMAC per output megapixel)
    assert RRDBNetConfig().macs_per_input_pixel * 64 * 64 == pytest.approx(73.4e9, rel=2e-3)


@pytest.mark.parametrize(
    "config",
    [RRDBNetConfig(nf=2, nb=1, gc=1), RRDBNetConfig(nf=2, nb=2, gc=1, scale=2, unshuffle=2)],
    ids=["x4", "x2-unshuffle"],
)
def test_receptive_radius_bounds_what_reaches_an_output_pixel(config: RRDBNetConfig) -> None:
    """The gradient of one output pixel block is non-zero exactly on its receptive field."""
    model = RRDBNet(config=config).double().eval()
    radius = config.receptive_radius
    n = 2 * radius + 8
    c, s = n // 2, config.scale
    x = torch.rand(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    model(x)[..., c * s : (c + 1) * s, c * s : (c + 1) * s].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum(dim=(0, 1))).unbind(1)
    reach = int(torch.maximum((ys - c).abs(), (xs - c).abs()).max())
    assert radius - 3 * config.unshuffle <= reach <= radius
