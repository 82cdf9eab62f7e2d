"""RRDBNet (ESRGAN / BasicSR) -> SPSRNet SR-branch initialisation on tiny synthetic networks."""

from __future__ import annotations

import re

import pytest
import torch

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.train.pretrained import InitReport, init_sr_branch_from_rrdb, rrdb_to_spsr_state_dict

NF, NB, GC = 8, 2, 4
CONFIG = SPSRConfig(nf=NF, nb=NB, gc=GC)


def _basicsr(nf: int = NF, nb: int = NB, gc: int = GC) -> dict[str, torch.Tensor]:
    """A BasicSR RRDBNet x4 state dict with distinct random tensors."""
    shapes: dict[str, tuple[int, int]] = {"conv_first": (nf, 3)}
    for i in range(nb):
        for k in (1, 2, 3):
            for j in range(1, 6):
                shapes[f"body.{i}.rdb{k}.conv{j}"] = (gc if j < 5 else nf, nf + (j - 1) * gc)
    shapes.update({"conv_body": (nf, nf), "conv_up1": (nf, nf), "conv_up2": (nf, nf), "conv_hr": (nf, nf), "conv_last": (3, nf)})
    sd = {}
    for name, (out, inp) in shapes.items():
        sd[f"{name}.weight"] = torch.randn(out, inp, 3, 3)
        sd[f"{name}.bias"] = torch.randn(out)
    return sd


_BASICSR_TO_SPSR = [
    (r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", r"trunk.\1.rdb\2.conv\3.\4"),
    (r"conv_body\.(\w+)", r"trunk_conv.\1"),
    (r"conv_up1\.(\w+)", r"upsampler.0.conv.\1"),
    (r"conv_up2\.(\w+)", r"upsampler.1.conv.\1"),
    (r"conv_hr\.(\w+)", r"hr_conv0.\1"),
    (r"conv_first\.(\w+)", r"conv_first.\1"),
]
_BASICSR_TO_ESRGAN = [
    (r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", r"model.1.sub.\1.RDB\2.conv\3.0.\4"),
    (r"conv_body\.(\w+)", rf"model.1.sub.{NB}.\1"),
    (r"conv_first\.(\w+)", r"model.0.\1"),
    (r"conv_up1\.(\w+)", r"model.3.\1"),
    (r"conv_up2\.(\w+)", r"model.6.\1"),
    (r"conv_hr\.(\w+)", r"model.8.\1"),
    (r"conv_last\.(\w+)", r"model.10.\1"),
]
_BASICSR_TO_ESRGAN_NEW = [
    (r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", r"RRDB_trunk.\1.RDB\2.conv\3.\4"),
    (r"conv_body\.(\w+)", r"trunk_conv.\1"),
    (r"conv_up(\d)\.(\w+)", r"upconv\1.\2"),
    (r"conv_hr\.(\w+)", r"HRconv.\1"),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, repl in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def _relayout(sd: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    return {(_rename(k, rules) or k): v for k, v in sd.items()}


def _expected_spsr(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {new: v for k, v in sd.items() if (new := _rename(k, _BASICSR_TO_SPSR)) is not None}


def _trunk_keys(model: SPSRNet) -> list[str]:
    return [k for k in model.state_dict() if k.startswith(("conv_first.", "trunk.", "trunk_conv.", "upsampler.", "hr_conv0."))]


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda sd: sd, id="basicsr"),
        pytest.param(lambda sd: {"params_ema": {f"module.{k}": v for k, v in sd.items()}}, id="basicsr-params_ema-module"),
        pytest.param(lambda sd: _relayout(sd, _BASICSR_TO_ESRGAN), id="esrgan-original"),
        pytest.param(lambda sd: {"state_dict": _relayout(sd, _BASICSR_TO_ESRGAN)}, id="esrgan-original-wrapped"),
        pytest.param(lambda sd: {"params": _relayout(sd, _BASICSR_TO_ESRGAN_NEW)}, id="esrgan-rrdb_trunk"),
    ],
)
def test_every_trunk_tensor_lands_in_the_right_key(layout) -> None:
    source = _basicsr()
    expected = _expected_spsr(source)
    mapped = rrdb_to_spsr_state_dict(layout(source))
    model = SPSRNet(config=CONFIG)
    assert sorted(mapped) == sorted(_trunk_keys(model))
    for key, value in expected.items():
        assert mapped[key] is value or torch.equal(mapped[key], value), key

    report = init_sr_branch_from_rrdb(model, layout(source))
    assert isinstance(report, InitReport)
    own = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(own[key], value), key
    assert sorted(report.loaded) == sorted(expected)
    assert {"hr_conv1.weight", "hr_conv1.bias"} <= set(report.random)
    assert all(k.startswith(("branch.", "fusion.", "hr_conv1.")) for k in report.random)
    assert len(report.random) + len(report.loaded) == len(own)
    assert len(report.ignored) == 2 and all(k.endswith(("weight", "bias")) for k in report.ignored)
    assert all("10" in k or "conv_last" in k for k in report.ignored)


def test_init_changes_only_the_sr_trunk() -> None:
    model = SPSRNet(config=CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_sr_branch_from_rrdb(model, _basicsr())
    after = model.state_dict()
    for key in report.random:
        assert torch.equal(before[key], after[key]), key
    assert model(torch.rand(1, 3, 6, 6)).sr.shape == (1, 3, 24, 24)


def test_shape_mismatch_is_reported_and_nothing_is_copied() -> None:
    model = SPSRNet(config=CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="shape mismatch") as info:
        init_sr_branch_from_rrdb(model, _basicsr(gc=5))
    assert "trunk.0.rdb1.conv1.weight" in str(info.value)
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value), key


def test_block_count_mismatch_lists_unexpected_and_missing() -> None:
    with pytest.raises(CheckpointMismatchError, match="unexpected: trunk.2"):
        init_sr_branch_from_rrdb(SPSRNet(config=CONFIG), _basicsr(nb=3))
    with pytest.raises(CheckpointMismatchError, match="missing: trunk.1"):
        init_sr_branch_from_rrdb(SPSRNet(config=CONFIG), _basicsr(nb=1))


def test_unknown_layout_lists_what_was_seen() -> None:
    with pytest.raises(CheckpointMismatchError, match="saw keys .*encoder.weight"):
        rrdb_to_spsr_state_dict({"encoder.weight": torch.zeros(1), "decoder.bias": torch.zeros(1)})


def test_unplaceable_keys_in_a_known_layout_are_an_error() -> None:
    sd = _basicsr()
    sd["attention.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointMismatchError, match="attention.weight"):
        rrdb_to_spsr_state_dict(sd)
