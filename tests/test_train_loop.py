"""The training loop on CPU: losses fall, resume is exact, fusion-only phase, export works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from torch import nn

from spsr_cli import load_generator
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiling import upscale_tensor
from spsr_cli.errors import UsageError
from spsr_cli.model.spsr import SPSRNet
from spsr_cli.train.checkpoint import checkpoint_path, load_checkpoint
from spsr_cli.train.config import TrainConfig, load_config
from spsr_cli.train.export import export_run
from spsr_cli.train.loop import train

TINY = [
    "model.nf=8",
    "model.nb=2",
    "model.gc=4",
    "data.synthetic=4",
    "data.crop_size=32",
    "data.batch_size=2",
    "loss.d_channels=4",
    "train.threads=1",
    "train.device=cpu",
    "train.lr=2e-3",
    "train.lr_d=2e-3",
    "train.fusion_only_steps=0",
    "train.log_every=1",
    "train.ema_decay=0.9",
    "logging.progress=false",
    "validation.lpips=false",
]


def tiny_config(*overrides: str) -> TrainConfig:
    return load_config(None, [*TINY, *overrides])


def tiny_backbone() -> tuple[nn.Module, str]:
    """A small fixed random feature extractor standing in for VGG (no download)."""
    gen = torch.Generator().manual_seed(123)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net, "tiny-test"


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_losses_fall_with_the_full_objective(tmp_path: Path) -> None:
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(val / "v.png")
    cfg = tiny_config("train.steps=30", "train.checkpoint_every=30", f"validation.hr_dir={val}", "validation.every=15")
    result = train(cfg, tmp_path / "run", perceptual_backbone=tiny_backbone())
    hist = result.history
    assert len(hist) == 30 and result.perceptual == "tiny-test"
    assert {"pixel", "perceptual", "gan", "gradient_pixel", "gradient_gan", "branch", "d_image", "d_gradient"} <= set(
        hist[0]
    )
    for key in ("loss_g", "pixel", "perceptual", "branch"):
        assert _mean(hist[-5:], key) < 0.8 * _mean(hist[:5], key), key
    assert [v["step"] for v in result.validation] == [15, 30]
    assert all(np.isfinite(v["psnr"]) for v in result.validation)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[0]["event"] == "start" and rows[0]["perceptual"] == "tiny-test"
    assert any(r.get("event") == "validation" for r in rows) and "it_s" in rows[1]
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=8", "train.checkpoint_every=4", "train.fusion_only_steps=2", "train.milestones=[6]")
    full = train(cfg, tmp_path / "full", perceptual_backbone=tiny_backbone())
    killed = train(cfg, tmp_path / "split", perceptual_backbone=tiny_backbone(), stop_after=6)
    assert killed.step == 6 and killed.checkpoint == checkpoint_path(tmp_path / "split", 4)
    resumed = train(cfg, tmp_path / "split", resume=True, perceptual_backbone=tiny_backbone())
    assert resumed.step == 8
    assert [r["loss_g"] for r in resumed.history] == [r["loss_g"] for r in full.history[4:]]
    a = load_checkpoint(checkpoint_path(tmp_path / "full", 8))
    b = load_checkpoint(checkpoint_path(tmp_path / "split", 8))
    for key in ("model", "ema", "d_image", "d_gradient"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for group_a, group_b in zip(a["opt_g"]["state"].values(), b["opt_g"]["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in ("exp_avg", "exp_avg_sq"))
    assert a["sched_g"] == b["sched_g"] and a["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert [r["lr"] for r in full.history] == [2e-3] * 6 + [1e-3] * 2  # MultiStep: halved after step 6


def test_fusion_only_phase_trains_only_the_fusion_layers(tmp_path: Path) -> None:
    cfg = tiny_config("train.stage=psnr", "train.steps=3", "train.fusion_only_steps=3", "train.checkpoint_every=3")
    torch.manual_seed(cfg.train.seed)
    initial = SPSRNet(config=cfg.spsr_config()).state_dict()
    final = train(cfg, tmp_path / "run").state["model"]
    changed = {k for k in initial if not torch.equal(initial[k], final[k])}
    assert changed and all(k.startswith("fusion.") for k in changed)


class _GraphProbe:
    """Forward hooks recording, per generator part, whether its outputs joined the autograd graph."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: dict[str, list[bool]] = {"trunk": [], "branch": [], "fusion": []}
        parts = {"trunk": model.trunk[-1], "branch": model.branch, "fusion": model.fusion}
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in parts.items()]

    def _hook(self, name: str):
        def record(module, inputs, output) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if torch.is_grad_enabled():  # training steps only (validation runs under no_grad)
                self.calls[name].append(out.requires_grad)

        return record


@pytest.mark.parametrize(
    ("trainable", "learning"),
    [
        ("branch+fusion", {"branch", "fusion"}),
        ("fusion", {"fusion"}),
        ("branch", {"branch"}),
        ("all", {"trunk", "branch", "fusion"}),
    ],
)
def test_frozen_parts_stay_unchanged_and_build_no_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainable: str, learning: set[str]
) -> None:
    from spsr_cli.model import spsr as spsr_module
    from spsr_cli.model.spsr import part_of

    probes: list[_GraphProbe] = []
    original_init = spsr_module.SPSRNet.__init__

    def init_and_probe(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        if not probes:  # the first SPSRNet the loop builds is the trained model (the EMA is a deep copy)
            probes.append(_GraphProbe(self))

    monkeypatch.setattr(spsr_module.SPSRNet, "__init__", init_and_probe)
    stage = ["train.stage=psnr", "psnr_loss.pixel=0", "psnr_loss.branch=1"] if trainable == "branch" else []
    cfg = tiny_config(*stage, f"train.trainable={trainable}", "train.steps=3", "train.checkpoint_every=3")
    result = train(cfg, tmp_path / "run", perceptual_backbone=tiny_backbone())
    torch.manual_seed(cfg.train.seed)
    initial = SPSRNet(config=cfg.spsr_config()).state_dict()
    final = result.state["model"]
    changed = {part_of(k) for k in initial if not torch.equal(initial[k], final[k])}
    assert changed == learning
    calls = probes[0].calls
    assert all(calls[part] for part in ("trunk", "branch"))
    for part, flags in calls.items():
        if part in learning:
            assert all(flags), part
        elif part == "trunk":
            assert not any(flags), "the frozen trunk's outputs carry an autograd graph"
    if trainable == "branch":  # no SR loss term: the fusion block is not even run
        assert calls["fusion"] == []
    with pytest.raises(UsageError, match="train.trainable"):
        tiny_config("train.trainable=trunk")


def test_each_part_learns_at_its_own_rate_and_a_frozen_part_never_changes(tmp_path: Path) -> None:
    from spsr_cli.model.spsr import part_of

    rates = ["train.lr_parts.trunk=0.25", "train.lr_parts.branch=4", "train.lr_parts.fusion=2"]
    cfg = tiny_config("train.trainable=branch+fusion", *rates, "train.steps=2", "train.checkpoint_every=2")
    run = tmp_path / "run"
    result = train(cfg, run, perceptual_backbone=tiny_backbone())
    state = load_checkpoint(checkpoint_path(run, 2))
    groups = {g["part"]: g for g in state["opt_g"]["param_groups"]}
    assert {part: g["lr"] for part, g in groups.items()} == pytest.approx(
        {"trunk": 2e-3 * 0.25, "branch": 2e-3 * 4, "fusion": 2e-3 * 2}
    )
    names = [name for name, _ in SPSRNet(config=cfg.spsr_config()).named_parameters()]
    for part, group in groups.items():  # each group holds exactly its part's parameters
        assert len(group["params"]) == sum(part_of(n) == part for n in names)
    assert state["config"]["train"]["lr_parts"] == {"trunk": 0.25, "branch": 4.0, "fusion": 2.0}
    torch.manual_seed(cfg.train.seed)
    initial = SPSRNet(config=cfg.spsr_config()).state_dict()
    final = result.state["model"]
    assert all(torch.equal(initial[k], final[k]) for k in initial if part_of(k) == "trunk")  # frozen, factor 0.25

    # Adam's first step moves every weight by about lr: the step size follows each part's rate.
    cfg = tiny_config("train.trainable=all", "train.stage=psnr", *rates, "train.steps=1", "train.checkpoint_every=1")
    moved = train(cfg, tmp_path / "one", perceptual_backbone=tiny_backbone()).state["model"]
    step = {
        part: max(float((moved[k] - initial[k]).abs().max()) for k in initial if part_of(k) == part and "weight" in k)
        for part in ("trunk", "branch", "fusion")
    }
    assert step["trunk"] == pytest.approx(2e-3 * 0.25, rel=0.05)
    assert step["branch"] == pytest.approx(2e-3 * 4, rel=0.05)
    assert step["fusion"] == pytest.approx(2e-3 * 2, rel=0.05)

    # resuming with new factors changes the rates from then on
    cfg = tiny_config("train.trainable=all", *rates, "train.steps=3", "train.lr_parts.trunk=0.5")
    train(cfg, run, resume=True, perceptual_backbone=tiny_backbone())
    groups = {g["part"]: g for g in load_checkpoint(checkpoint_path(run, 3))["opt_g"]["param_groups"]}
    assert groups["trunk"]["lr"] == pytest.approx(2e-3 * 0.5) and groups["branch"]["lr"] == pytest.approx(8e-3)


def test_a_fresh_run_never_overwrites_an_existing_one(tmp_path: Path) -> None:
    cfg = tiny_config("train.stage=psnr", "train.steps=1", "train.checkpoint_every=1")
    train(cfg, tmp_path / "run")
    with pytest.raises(UsageError, match="--resume"):
        train(cfg, tmp_path / "run")
    other = tiny_config("train.stage=psnr", "train.steps=2", "model.nf=4")
    with pytest.raises(UsageError, match="cannot resume"):
        train(other, tmp_path / "run", resume=True)
    with pytest.raises(UsageError, match="stage"):
        train(tiny_config("train.steps=2"), tmp_path / "run", resume=True)


def test_export_loads_by_name_and_upscales(tmp_path: Path) -> None:
    cfg = tiny_config("train.stage=psnr", "train.steps=4", "train.checkpoint_every=4")
    train(cfg, tmp_path / "run")
    result = export_run(tmp_path / "run", name="tiny-run")
    with safe_open(str(result.path), framework="pt") as fh:
        meta = fh.metadata()
        assert all(fh.get_tensor(k).dtype == torch.float16 for k in fh.keys())
    assert meta["training_step"] == "4" and meta["weights"] == "ema" and json.loads(meta["config"])["nf"] == 8
    model = load_generator("tiny-run")
    ema = load_checkpoint(checkpoint_path(tmp_path / "run", 4))["ema"]
    torch.testing.assert_close(model.fusion.out.weight, ema["fusion.out.weight"].half().float())
    x = torch.rand(1, 3, 12, 10)
    y = upscale_tensor(model, x, InferenceOptions(device="cpu", tile=None))
    assert y.shape == (1, 3, 48, 40) and 0 <= y.min() and y.max() <= 1
    with pytest.raises(Exception, match="exists already"):
        export_run(tmp_path / "run", name="tiny-run")
    again = export_run(tmp_path / "run", name="tiny-run", replace=True)
    assert again.path == result.path and torch.equal(
        load_generator("tiny-run").fusion.out.weight, model.fusion.out.weight
    )


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    cfg = tiny_config("train.stage=psnr", "train.steps=1", "train.checkpoint_every=1", "logging.tensorboard=true")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="pip install"):
            train(cfg, tmp_path / "run")
    else:
        train(cfg, tmp_path / "run")
        assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_time_limit_checkpoints_and_stops(tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=50", "train.checkpoint_every=1000", "train.time_limit_min=1e-9")
    result = train(cfg, tmp_path / "run", perceptual_backbone=tiny_backbone())
    assert result.step == 1
    assert result.checkpoint == checkpoint_path(tmp_path / "run", 1)
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "time_limit" for e in events)


@pytest.mark.parametrize(
    ("amp", "units", "expected"), [("auto", "1", True), ("auto", "0", False), ("off", "1", False), ("bf16", "0", True)]
)
def test_cpu_training_uses_bf16_autocast_and_channels_last_where_the_cpu_has_bf16_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, amp: str, units: str, expected: bool
) -> None:
    monkeypatch.setenv("SPSR_CPU_BF16", units)
    seen: list[torch.dtype] = []
    backbone, name = tiny_backbone()
    backbone.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    cfg = tiny_config("train.steps=2", "train.checkpoint_every=2", f"train.amp={amp}")
    result = train(cfg, tmp_path / "run", perceptual_backbone=(backbone, name))
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["amp"] is expected and start["channels_last"] is expected
    assert set(seen) == {torch.bfloat16 if expected else torch.float32}
    assert all(np.isfinite(row["loss_g"]) for row in result.history)
    state = load_checkpoint(result.checkpoint)
    assert all(v.dtype == torch.float32 for v in state["model"].values())  # autocast never changes the weights


def test_discriminator_warm_up_freezes_the_generator(tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=0", "train.d_warmup_steps=2")
    result = train(cfg, tmp_path / "run", perceptual_backbone=tiny_backbone())
    first, second, third = (load_checkpoint(checkpoint_path(tmp_path / "run", s)) for s in (1, 2, 3))
    torch.manual_seed(cfg.train.seed)  # the same seeded initialisation the loop made
    init = SPSRNet(config=cfg.spsr_config())
    for key, value in init.state_dict().items():
        assert torch.equal(second["model"][key], value), key  # frozen for two steps
    assert any(not torch.equal(first["d_image"][k], v) for k, v in third["d_image"].items())  # D trained
    assert any(not torch.equal(second["model"][k], v) for k, v in third["model"].items())  # then G moves
    assert "loss_g" not in result.history[0] and "loss_d" in result.history[0] and "loss_g" in result.history[2]


@pytest.mark.parametrize("preset", ["spsr-p", "spsr-j"])
def test_structure_presets_train_resume_and_export(tmp_path: Path, preset: str) -> None:
    from spsr_cli.model.nse import NSEConfig, NSENet
    from spsr_cli.weights.nse_files import write_nse_file

    torch.manual_seed(5)
    nse = tmp_path / "nse.safetensors"
    write_nse_file(nse, NSENet(NSEConfig(channels=4)), metadata={"method": "test"})
    cfg = tiny_config(
        f"loss.preset={preset}", f"loss.nse={nse}", "train.steps=4", "train.checkpoint_every=2", "train.amp=off"
    )
    full = train(cfg, tmp_path / "full", perceptual_backbone=tiny_backbone())
    row = full.history[0]
    assert {"structure_pixel", "structure_gan", "d_structure", "pixel", "perceptual", "branch"} <= set(row)
    assert not {"gan", "gradient_pixel", "gradient_gan", "d_image", "d_gradient"} & set(row)
    train(cfg, tmp_path / "split", perceptual_backbone=tiny_backbone(), stop_after=2)
    resumed = train(cfg, tmp_path / "split", resume=True, perceptual_backbone=tiny_backbone())
    assert [r["loss_g"] for r in resumed.history] == [r["loss_g"] for r in full.history[2:]]
    a, b = (load_checkpoint(checkpoint_path(tmp_path / run, 4)) for run in ("full", "split"))
    for key in ("ema", "d_structure"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    assert a["d_image"] is None and a["d_gradient"] is None
    with pytest.raises(UsageError, match="preset"):
        train(tiny_config("train.steps=6"), tmp_path / "full", resume=True)
    export_run(tmp_path / "full", name=f"tiny-{preset}")
    assert load_generator(f"tiny-{preset}", device="cpu")(torch.rand(1, 3, 8, 8)).sr.shape == (1, 3, 32, 32)


def test_a_resumed_run_removes_temporaries_a_killed_save_left(tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=1", "train.checkpoint_every=1", "loss.perceptual=0")
    train(cfg, tmp_path / "run")
    stale = tmp_path / "run" / "checkpoints" / ".step_00000002.pt.999999999.tmp"  # no such process
    stale.write_bytes(b"half a checkpoint")
    # stop_after=1: the resumed run takes no step, so no save could have removed it
    train(
        tiny_config("train.steps=2", "train.checkpoint_every=1", "loss.perceptual=0"),
        tmp_path / "run",
        resume=True,
        stop_after=1,
    )
    assert not stale.exists()
