"""Parity with the published checkpoint layout, and strict refusal of anything else."""

import json

import numpy as np
import pytest
import torch

from spsr_cli import load_generator
from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.checkpoint import canonicalize_state_dict, infer_config
from spsr_cli.model.spsr import SPSRConfig


def published_state_dict(shared_dir):
    """Build the fixture checkpoint exactly as fixtures/README.md describes."""
    layout = json.loads((shared_dir / "fixtures/spsr_official_layout/layout.json").read_text())
    sd = {}
    for i, entry in enumerate(layout["keys"]):
        key, shape = entry["key"], entry["shape"]
        if key in layout["fixed_kernels"]:
            value = np.array(layout["fixed_kernels"][key], dtype=np.float64).reshape(1, 1, 3, 3)
        else:
            z = np.random.default_rng(layout["weight_seed_base"] + i).standard_normal(shape)
            value = z * 0.5 / np.sqrt(np.prod(shape[1:])) if key.endswith("weight") else z * 0.01
        sd[key] = torch.from_numpy(value.astype(np.float32))
    for alias, original in layout["aliases"].items():
        sd[alias] = sd[original].clone()
    return sd


@pytest.mark.slow
def test_published_layout_parity_through_load_generator(shared_dir, tmp_path):
    sd = published_state_dict(shared_dir)
    # wrapped and DataParallel-prefixed, as released .pth files often are
    path = tmp_path / "spsr.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in sd.items()}}, path)
    model = load_generator(path)
    assert model.config == SPSRConfig()
    expected = np.load(shared_dir / "fixtures/spsr_official_layout/expected.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(expected["input"]))
    for name in ("sr", "branch", "grad_lr"):
        got = getattr(out, name).double().numpy()
        ref = expected[name]
        assert got.shape == ref.shape
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5, name


def _tiny_published(tiny_model):
    """Write the tiny model back into the published naming (the inverse mapping)."""
    from spsr_cli.model.gradient import KERNEL_H, KERNEL_V

    nb = tiny_model.config.nb
    out = {}
    for key, value in tiny_model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "trunk":
            new = f"model.1.sub.{parts[1]}.RDB{parts[2][3]}.{parts[3]}.0.{parts[4]}"
        elif parts[0] == "branch" and parts[1] == "blocks":
            new = f"b_block_{int(parts[2]) + 1}.RDB{parts[3][3]}.{parts[4]}.0.{parts[5]}"
        elif parts[0] == "fusion" and parts[1] == "block":
            new = f"f_block.RDB{parts[2][3]}.{parts[3]}.0.{parts[4]}"
        else:
            stem, leaf = ".".join(parts[:-1]), parts[-1]
            names = {
                "conv_first": "model.0", "trunk_conv": f"model.1.sub.{nb}", "upsampler.0.conv": "model.3",
                "upsampler.1.conv": "model.6", "hr_conv0": "model.8", "hr_conv1": "HR_conv1_new.0",
                "branch.conv_first": "b_fea_conv.0", "branch.lr_conv": "b_LR_conv.0",
                "branch.upsampler.0.conv": "b_module.1", "branch.upsampler.1.conv": "b_module.4",
                "branch.hr_conv0": "b_module.6", "branch.hr_conv1": "b_module.8", "branch.out": "conv_w.0",
                "fusion.concat": "f_concat.0", "fusion.hr_conv0": "f_HR_conv0.0", "fusion.out": "f_HR_conv1.0",
                **{f"branch.concats.{i}": f"b_concat_{i + 1}.0" for i in range(4)},
            }
            new = f"{names[stem]}.{leaf}"
        out[new] = value.clone()
    out["HR_conv0_new.0.weight"] = out["model.8.weight"].clone()
    out["HR_conv0_new.0.bias"] = out["model.8.bias"].clone()
    out["get_g_nopadding.weight_h"] = torch.tensor(KERNEL_H).view(1, 1, 3, 3)
    out["get_g_nopadding.weight_v"] = torch.tensor(KERNEL_V).view(1, 1, 3, 3)
    return out


def test_tiny_published_layout_maps_every_key(tiny_model):
    sd, config = canonicalize_state_dict(_tiny_published(tiny_model))
    assert config == tiny_model.config
    reference = tiny_model.state_dict()
    assert set(sd) == set(reference)
    assert all(torch.equal(sd[k], reference[k]) for k in reference)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd.pop("f_concat.0.bias"), "missing keys"),
        (lambda sd: sd.__setitem__("extra.weight", torch.zeros(1)), "unexpected keys"),
        (lambda sd: sd.__setitem__("conv_w.0.weight", torch.zeros(3, 8, 3, 3)), "shape mismatches"),
        (lambda sd: sd["HR_conv0_new.0.bias"].add_(1.0), "exact copy"),
        (lambda sd: sd["get_g_nopadding.weight_h"].mul_(2.0), "fixed kernel"),
    ],
)
def test_mismatched_checkpoints_are_refused_with_a_list(tiny_model, tmp_path, mutate, message):
    sd = _tiny_published(tiny_model)
    mutate(sd)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_generator(path)


def test_pth_loads_only_plain_tensors(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1)}, "obj": SPSRConfig()}, path)
    with pytest.raises(CheckpointMismatchError, match="other than tensors .*SPSRConfig.*could run code") as info:
        load_generator(path)
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load


def test_not_a_generator_is_named(tmp_path):
    with pytest.raises(CheckpointMismatchError, match="not an SPSR generator"):
        infer_config({"foo.weight": torch.zeros(1)})
