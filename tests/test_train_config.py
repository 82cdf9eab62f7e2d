"""Training config: defaults = the paper's recipe, YAML/TOML files, overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spsr_cli.train.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    default_config,
    dump_yaml,
    load_config,
    resolve_run_config,
    write_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_paper_recipe() -> None:
    cfg = default_config()
    loss = cfg.loss
    assert (loss.pixel, loss.perceptual, loss.gan, loss.gradient_pixel, loss.gradient_gan, loss.branch) == (
        0.01,
        1.0,
        0.005,
        0.01,
        0.005,
        0.5,
    )
    assert loss.gradient_variance == 0.0 and loss.second_order == 0.0
    assert cfg.train.lr == cfg.train.lr_d == 1e-4
    assert (cfg.train.beta1, cfg.train.beta2) == (0.9, 0.999)
    assert cfg.train.milestones == [50_000, 100_000, 200_000, 300_000] and cfg.train.gamma == 0.5
    assert cfg.train.steps == 500_000 and cfg.train.fusion_only_steps == 5000
    assert cfg.data.crop_size == 128 and cfg.data.batch_size == 30
    assert (cfg.model.nf, cfg.model.nb, cfg.model.gc, cfg.model.scale) == (64, 23, 32, 4)


def test_yaml_file_and_typed_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: {nf: 8, nb: 2}\ntrain: {steps: 10}\n")
    cfg = load_config(
        path,
        [
            "train.lr=2e-4",
            "data.hr_dirs=[a, b]",
            "data.flip=false",
            "train.milestones=5,7",
            "train.init=null",
            "data.batch_size=3",
        ],
    )
    assert cfg.model.nf == 8 and cfg.model.nb == 2 and cfg.model.gc == 32  # untouched keys keep defaults
    assert cfg.train.steps == 10
    assert cfg.train.lr == pytest.approx(2e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.hr_dirs == ["a", "b"] and cfg.data.flip is False
    assert cfg.train.milestones == [5, 7] and cfg.train.init is None and cfg.data.batch_size == 3


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[train]\nstage = "psnr"\nsteps = 7\n[data]\nhr_dirs = ["x"]\n')
    cfg = load_config(path)
    assert cfg.train.stage == "psnr" and cfg.train.steps == 7 and cfg.data.hr_dirs == ["x"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "train.lrr"),
        ("nosuch.key=1", "nosuch"),
        ("train.steps=abc", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("train.stage=adversarial", "train.stage"),
        ("data.crop_size=30", "data.crop_size"),
        ("loss.perceptual_backbone=resnet", "perceptual_backbone"),
        ("loss.pixel=-1", "loss.pixel"),
        ("train.lr_parts.trunk=0", "train.lr_parts.trunk"),
        ("train.lr_parts.fusion=-2", "train.lr_parts.fusion"),
        ("train.lr_parts.head=1", "train.lr_parts.head"),
        ("train.lr", "section.key=value"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override])


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=3e-4", "data.hr_dirs=[x]", "loss.gradient_variance=0.1"])
    assert TrainConfig.from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg
    write_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_overrides_do_not_mutate_input() -> None:
    data = {"train": {"lr": 1.0}}
    out = apply_overrides(data, ["train.lr=2"])
    assert data == {"train": {"lr": 1.0}} and out["train"]["lr"] == 2


def test_shipped_configs_parse() -> None:
    paper = load_config(CONFIGS / "spsr-x4.yaml")
    assert paper.loss == default_config().loss and paper.train.milestones == default_config().train.milestones
    tiny = load_config(CONFIGS / "tiny-cpu.yaml")
    assert tiny.model.nf <= 16 and tiny.data.synthetic > 0 and tiny.train.device == "cpu"
    assert tiny.loss.perceptual_backbone == "none"  # runs offline


def test_resume_uses_the_stored_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.steps=9"])
    write_config(cfg, tmp_path / "config.yaml")
    resumed = resolve_run_config(config_path=None, overrides=["train.steps=12"], run_dir=tmp_path, resume=True)
    assert resumed.train.steps == 12
    with pytest.raises(ConfigError, match="--config"):
        resolve_run_config(config_path=None, overrides=[], run_dir=tmp_path / "new", resume=False)


def test_yaml_off_stays_the_word_off_for_string_keys() -> None:
    from spsr_cli.train.config import load_config

    assert load_config(None, ["train.amp=off"]).train.amp == "off"


def test_structure_preset_configs_differ_from_the_paper_recipe_only_in_the_objective() -> None:
    paper = load_config(CONFIGS / "spsr-x4.yaml").to_dict()
    for preset, nse in (("spsr-p", "nse-contrastive"), ("spsr-j", "nse-jigsaw")):
        cfg = load_config(CONFIGS / f"{preset}-x4.yaml")
        assert cfg.loss.preset == preset and cfg.loss.nse_spec() == nse
        other = cfg.to_dict()
        assert {k: v for k, v in other.items() if k != "loss"} == {k: v for k, v in paper.items() if k != "loss"}
        drop = lambda loss: {k: v for k, v in loss.items() if k not in ("preset", "nse")}  # noqa: E731
        assert drop(other["loss"]) == drop(paper["loss"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-1", "train.lr must be positive"),
        ("train.lr=0", "train.lr must be positive"),
        ("train.lr_d=-1", "train.lr_d must be >= 0"),
        ("train.beta1=2", "train.beta1 must be in [0, 1)"),
        ("train.beta2=1", "train.beta2 must be in [0, 1)"),
        ("train.lr=.nan", "train.lr must be a finite number"),
        ("train.lr_d=.inf", "train.lr_d must be a finite number"),
        ("train.grad_clip=.nan", "train.grad_clip must be a finite number"),
        ("loss.pixel=.nan", "loss.pixel must be a finite number"),
        ("train.gamma=-1", "train.gamma must be positive"),
        ("train.gamma=0", "train.gamma must be positive"),
        ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
        ("train.milestones=[0, 10]", "train.milestones must be positive"),
    ],
)
def test_bad_optimiser_values_are_refused_before_training(override: str, message: str) -> None:
    """Issue 26, defect 7: ``train.lr=-1`` (also ``lr_d=-1``, ``beta1=2``, ``lr: .nan``) ended in Adam's
    ValueError traceback; ``train.gamma=-1`` with a milestone ran gradient ascent with no warning."""
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[").replace(")", r"\)")):
        load_config(None, [override])
    load_config(None, ["train.lr_d=0", "train.beta1=0", "train.gamma=2"])  # the edges that are fine
