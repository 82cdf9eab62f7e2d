import pytest
import torch

from spsr_cli.model.gradient import gradient_map
from spsr_cli.model.spsr import SPSRConfig, SPSRNet


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_shapes_follow_scale(scale):
    model = SPSRNet(config=SPSRConfig(nf=8, nb=2, gc=4, scale=scale)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 6, 5))
    assert out.sr.shape == (2, 3, 6 * scale, 5 * scale)
    assert out.branch.shape == (2, 3, 6 * scale, 5 * scale)
    assert out.grad_lr.shape == (2, 3, 6, 5)


def test_published_depth_taps_are_5_10_15_20():
    assert SPSRConfig().taps == (5, 10, 15, 20)
    assert all(1 <= t <= 2 for t in SPSRConfig(nb=2).taps)


def test_full_size_parameter_count_matches_published_model():
    # 884 published keys minus 2 aliases and 2 fixed kernels
    model = SPSRNet()
    assert len(model.state_dict()) == 880
    assert not any("gradient" in k for k in model.state_dict())


@pytest.mark.parametrize("bad", [dict(scale=3), dict(nf=0), dict(nb=-1)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SPSRConfig(**bad)


def test_config_round_trips_and_rejects_unknown_fields():
    cfg = SPSRConfig(nf=16, nb=3, gc=8)
    assert SPSRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SPSRConfig.from_dict({"nf": 8, "depth": 3})


def test_gradient_map_hand_computed():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 2] = 1.0  # right neighbour of the centre
    x[0, 0, 2, 1] = 2.0  # bottom neighbour of the centre
    g = gradient_map(x)
    # centre: h = right - left = 1, v = bottom - top = 2
    assert g[0, 0, 1, 1].item() == pytest.approx((1 + 4 + 1e-6) ** 0.5, rel=1e-6)
    # flat corner far from both pixels: only eps
    assert g[0, 0, 0, 0].item() == pytest.approx(1e-3, rel=1e-3)
    assert gradient_map(torch.rand(2, 3, 5, 7), padding=2).shape == (2, 3, 7, 9)


def test_fusion_parameters_are_the_f_layers():
    model = SPSRNet(config=SPSRConfig(nf=8, nb=2, gc=4))
    names = {n for n, _ in model.named_parameters() if n.startswith("fusion.")}
    assert {
        "fusion.block.rdb1.conv1.weight",
        "fusion.concat.weight",
        "fusion.hr_conv0.weight",
        "fusion.out.weight",
    } <= names


@pytest.mark.parametrize("config", [SPSRConfig(nf=2, nb=1, gc=1, scale=2), SPSRConfig(nf=2, nb=3, gc=1, scale=4)])
def test_receptive_radius_bounds_what_reaches_an_output_pixel(config):
    """The gradient of one output pixel block is non-zero exactly on its receptive field
    (LeakyReLU never has a zero slope), so its extent is the true radius."""
    torch.manual_seed(0)
    model = SPSRNet(config=config).double().eval()
    radius = config.receptive_radius
    n = 2 * radius + 5
    c, s = n // 2, config.scale
    x = torch.rand(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    model(x).sr[..., c * s : (c + 1) * s, c * s : (c + 1) * s].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum(dim=(0, 1))).unbind(1)
    reach = int(torch.maximum((ys - c).abs(), (xs - c).abs()).max())
    assert reach <= radius  # a bound: context beyond it cannot change the output
    assert reach >= radius - 2  # and a tight one: it is not wasted work
