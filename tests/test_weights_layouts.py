"""State-dict layouts: parity with the published SPSR layout, ESRGAN-family RRDBNet layouts normalised to
BasicSR names, and strict refusal of anything else."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import basicsr_rrdb_state

from spsr_cli import load_generator
from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.spsr import SPSRConfig
from spsr_cli.weights.layouts import (
    DAT,
    LAYOUTS,
    RRDBNET,
    SPSR,
    SRVGG,
    canonicalize_state_dict,
    detect_layout,
    infer_config,
    rrdb_to_basicsr,
)

NF, NB, GC = 8, 2, 4


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
                "conv_first": "model.0",
                "trunk_conv": f"model.1.sub.{nb}",
                "upsampler.0.conv": "model.3",
                "upsampler.1.conv": "model.6",
                "hr_conv0": "model.8",
                "hr_conv1": "HR_conv1_new.0",
                "branch.conv_first": "b_fea_conv.0",
                "branch.lr_conv": "b_LR_conv.0",
                "branch.upsampler.0.conv": "b_module.1",
                "branch.upsampler.1.conv": "b_module.4",
                "branch.hr_conv0": "b_module.6",
                "branch.hr_conv1": "b_module.8",
                "branch.out": "conv_w.0",
                "fusion.concat": "f_concat.0",
                "fusion.hr_conv0": "f_HR_conv0.0",
                "fusion.out": "f_HR_conv1.0",
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


# ---------------------------------------------------------------- RRDBNet layouts


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


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda sd: sd, id="basicsr"),
        pytest.param(
            lambda sd: {"params_ema": {f"module.{k}": v for k, v in sd.items()}}, id="basicsr-params_ema-module"
        ),
        pytest.param(lambda sd: _relayout(sd, _BASICSR_TO_ESRGAN), id="esrgan-original"),
        pytest.param(lambda sd: {"state_dict": _relayout(sd, _BASICSR_TO_ESRGAN)}, id="esrgan-original-wrapped"),
        pytest.param(lambda sd: {"params": _relayout(sd, _BASICSR_TO_ESRGAN_NEW)}, id="esrgan-rrdb_trunk"),
    ],
)
def test_every_layout_normalises_to_basicsr_names(layout) -> None:
    source = basicsr_rrdb_state()
    mapped = rrdb_to_basicsr(layout(source))
    assert sorted(mapped) == sorted(source)
    for key, value in source.items():
        assert torch.equal(mapped[key], value), key


def test_unknown_layout_lists_what_was_seen() -> None:
    with pytest.raises(CheckpointMismatchError, match="saw keys .*encoder.weight"):
        rrdb_to_basicsr({"encoder.weight": torch.zeros(1), "decoder.bias": torch.zeros(1)})


def test_unplaceable_keys_in_a_known_layout_are_an_error() -> None:
    sd = basicsr_rrdb_state()
    sd["attention.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointMismatchError, match="attention.weight"):
        rrdb_to_basicsr(sd)


def test_one_detection_table_serves_every_family(shared_dir) -> None:
    assert {layout.family for layout in LAYOUTS} == {SPSR, RRDBNET, SRVGG, DAT}
    assert detect_layout(published_state_dict(shared_dir), SPSR).name.startswith("spsr-published")
    assert detect_layout({"conv_first.weight": torch.zeros(1)}, SPSR).name.startswith("spsr (")
    assert detect_layout(basicsr_rrdb_state(), RRDBNET).name.startswith("basicsr")
    assert detect_layout(_relayout(basicsr_rrdb_state(), _BASICSR_TO_ESRGAN), RRDBNET).name.startswith("esrgan (")
    assert detect_layout({"encoder.weight": torch.zeros(1)}, RRDBNET) is None


# ---------------------------------------------------------------- any generator: one detection for both families


def _tiny_rrdbnet(config=None):
    from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig

    return RRDBNet(config=config or RRDBNetConfig(nf=NF, nb=NB, gc=GC)).eval()


@pytest.mark.parametrize(
    "layout, expected",
    [
        pytest.param(lambda sd: _relayout(sd, _BASICSR_TO_ESRGAN), "esrgan (", id="esrgan-model.N"),
        pytest.param(lambda sd: sd, "basicsr", id="basicsr"),
        pytest.param(
            lambda sd: {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}},
            "basicsr",
            id="real-esrgan-params_ema",
        ),
        pytest.param(lambda sd: {"params": _relayout(sd, _BASICSR_TO_ESRGAN_NEW)}, "esrgan-new", id="rrdb_trunk"),
    ],
)
def test_every_rrdbnet_layout_loads_as_an_rrdbnet(tmp_path, layout, expected) -> None:
    from spsr_cli.weights.layouts import normalize_generator

    net = _tiny_rrdbnet()
    source = net.state_dict()
    assert detect_layout(unwrap(layout(source))).name.startswith(expected)
    architecture, sd, config = normalize_generator(layout(source))
    assert architecture == RRDBNET and config == net.config
    path = tmp_path / "foreign.pth"
    torch.save(layout(source), path)
    model = load_generator(path)  # params_ema wins over params, as Real-ESRGAN intends
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def unwrap(obj):
    from spsr_cli.weights.layouts import unwrap_state_dict

    return unwrap_state_dict(obj)


@pytest.mark.parametrize("scale, unshuffle", [(8, 1), (4, 1), (2, 1), (2, 2), (1, 4)])
def test_rrdbnet_scale_and_unshuffle_come_from_the_weights(scale, unshuffle) -> None:
    from spsr_cli.model.rrdbnet import RRDBNetConfig
    from spsr_cli.weights.layouts import infer_rrdbnet_config

    config = RRDBNetConfig(nf=NF, nb=3, gc=GC, scale=scale, unshuffle=unshuffle)
    assert infer_rrdbnet_config(_tiny_rrdbnet(config).state_dict()) == config


def test_a_file_of_no_known_layout_names_what_was_found(tmp_path) -> None:
    path = tmp_path / "unet.pth"
    torch.save({"encoder.0.weight": torch.zeros(2, 3, 3, 3), "decoder.bias": torch.zeros(2)}, path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"not a generator checkpoint.*esrgan \(model\.N\).*"
        r"saw keys encoder\.0\.weight, decoder\.bias",
    ):
        load_generator(path)


def test_our_rrdbnet_safetensors_round_trip_with_its_config(tmp_path) -> None:
    from spsr_cli.model.rrdbnet import RRDBNetConfig
    from spsr_cli.weights.store import read_weights_file, write_generator_file

    net = _tiny_rrdbnet(RRDBNetConfig(nf=NF, nb=1, gc=GC, scale=2, unshuffle=2))
    path = tmp_path / "x2.safetensors"
    write_generator_file(path, net.state_dict(), net.config, source="test", licence="MIT", dtype=torch.float32)
    loaded = read_weights_file(path)
    assert loaded.architecture == RRDBNET and loaded.config == net.config
    assert loaded.metadata["architecture"] == "rrdbnet" and json.loads(loaded.metadata["config"])["unshuffle"] == 2
    x = torch.rand(1, 3, 7, 6)
    with torch.no_grad():
        assert torch.equal(load_generator(path)(x), net(x))


# ---------------------------------------------------------------- SRVGGNetCompact and DAT layouts


def _tiny_srvgg(**config):
    from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

    return SRVGGNetCompact(config=SRVGGConfig(**{"nf": 4, "num_conv": 2, **config})).eval()


@pytest.mark.parametrize("scale", [4, 2])
@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: {"params": sd}, id="params"),
        pytest.param(lambda sd: {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}}, id="params_ema"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="module"),
    ],
)
def test_real_esrgan_compact_files_load_as_srvgg(tmp_path, wrap, scale) -> None:
    from spsr_cli.weights.layouts import normalize_generator

    net = _tiny_srvgg(scale=scale)
    assert detect_layout(unwrap(wrap(net.state_dict()))).name.startswith("real-esrgan compact")
    architecture, _, config = normalize_generator(wrap(net.state_dict()))
    assert architecture == SRVGG and config == net.config  # features, convs, scale and PReLU from the tensors
    path = tmp_path / "compact.pth"
    torch.save(wrap(net.state_dict()), path)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(load_generator(path)(x), net(x))


def test_compact_files_with_a_missing_tensor_are_refused_with_its_name(tmp_path) -> None:
    sd = _tiny_srvgg().state_dict()
    del sd["body.3.weight"]  # the PReLU slopes after the first body convolution
    path = tmp_path / "compact.pth"
    torch.save({"params": sd}, path)
    with pytest.raises(
        CheckpointMismatchError, match=r"does not match the srvgg.*\n.*missing keys \(1\): body\.3\.weight"
    ):
        load_generator(path)
    relu = {k: v for k, v in _tiny_srvgg(activation="relu").state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"any layout.*body\.1\.weight \(PReLU slopes\).*saw keys body"):
        load_generator(_saved(tmp_path, relu))  # ReLU or LeakyReLU? the file cannot say


def _saved(tmp_path, sd, name="model.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def test_our_srvgg_safetensors_keep_an_activation_the_tensors_cannot_tell(tmp_path) -> None:
    from spsr_cli.weights.store import read_weights_file, write_generator_file

    net = _tiny_srvgg(activation="leakyrelu", scale=3)
    path = tmp_path / "compact.safetensors"
    write_generator_file(path, net.state_dict(), net.config, source="test", licence="MIT", dtype=torch.float32)
    loaded = read_weights_file(path)
    assert loaded.architecture == SRVGG and loaded.config == net.config
    x = torch.rand(1, 3, 5, 4)
    with torch.no_grad():
        assert torch.equal(load_generator(path)(x), net(x))


def _tiny_dat(**config):
    from spsr_cli.model.dat import DAT as Net
    from spsr_cli.model.dat import DATConfig

    tiny = {"nf": 16, "groups": 2, "depth": 4, "heads": 2, "ffn_channels": 16, "window_short": 4, "window_long": 8}
    torch.manual_seed(5)
    return Net(config=DATConfig(**{**tiny, **config})).eval()


def _published_dat(net) -> dict[str, torch.Tensor]:
    """Our DAT state dict in the published naming, with the tensors the published files carry besides:
    the position tables of every spatial branch, the shift masks (for a 16 x 16 input here, 64 x 64 in
    DAT-light's files) and the batch norms' counters."""
    from spsr_cli.model.dat import relative_offsets, relative_pair_index, shift_mask

    cfg = net.config
    out = {k.replace("norm_in.", "before_RG.1."): v.clone() for k, v in net.state_dict().items()}
    windows = ((cfg.window_short, cfg.window_long), (cfg.window_long, cfg.window_short))
    for g, group in enumerate(net.layers):
        for b, block in enumerate(group.blocks):
            prefix = f"layers.{g}.blocks.{b}.attn"
            if b % 2 == 0:
                for i, window in enumerate(windows):
                    out[f"{prefix}.attns.{i}.rpe_biases"] = relative_offsets(window)
                    out[f"{prefix}.attns.{i}.relative_position_index"] = relative_pair_index(window)
                    if block.attn.shifted:
                        out[f"{prefix}.attn_mask_{i}"] = shift_mask(16, 16, window, torch.device("cpu"))
            for part in ("dwconv.1", "channel_interaction.2", "spatial_interaction.1"):
                out[f"{prefix}.{part}.num_batches_tracked"] = torch.tensor(1000)
    return out


@pytest.mark.parametrize("scale", [4, 3])
def test_published_dat_files_are_checked_converted_and_load(tmp_path, scale) -> None:
    from spsr_cli.weights.layouts import normalize_generator

    net = _tiny_dat(scale=scale)
    published = _published_dat(net)
    assert detect_layout(published).name.startswith("dat")
    architecture, sd, config = normalize_generator({"params": published})
    assert architecture == DAT and config == net.config  # windows from the tables, groups, depth, heads, scale
    assert set(sd) == set(net.state_dict())  # derived tables, masks and counters dropped
    x = torch.rand(1, 3, 10, 13)
    with torch.no_grad():
        assert torch.equal(load_generator(_saved(tmp_path, {"params": published}))(x), net(x))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda sd: sd.pop("layers.1.blocks.3.ffn.fc2.bias"),
            r"missing keys \(1\): layers\.1\.blocks\.3\.ffn\.fc2\.bias",
        ),
        (lambda sd: sd.pop("upsample.0.weight"), "not a DAT-light state dict: key 'upsample.0.weight' is missing"),
        (lambda sd: sd["layers.0.blocks.2.attn.attn_mask_1"].mul_(0.5), "attn_mask_1 differs from the table DAT"),
        (lambda sd: sd["layers.0.blocks.0.attn.attns.0.rpe_biases"].add_(1), "rpe_biases differs"),
        (lambda sd: sd.__setitem__("conv_before_upsample.0.weight", torch.zeros(1)), "DAT-light .*only"),
        (lambda sd: sd.__setitem__("layers.0.blocks.0.attn.extra", torch.zeros(1)), r"unexpected keys \(1\)"),
    ],
)
def test_published_dat_files_that_do_not_fit_are_refused_with_what_is_wrong(tmp_path, mutate, message) -> None:
    published = _published_dat(_tiny_dat())
    mutate(published)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_generator(_saved(tmp_path, {"params": published}))
