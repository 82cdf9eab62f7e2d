"""The typed config of NSE training (``spsr train nse``): sections, range checks, loading.

Read by the same machinery as the generator's config (:func:`spsr_cli.train.config.load_typed_config`:
YAML/TOML, ``section.key=value`` overrides, every key and type checked); stored with the run
(``config.yaml``) and inside every checkpoint. The task it configures is described in
:mod:`spsr_cli.train.nse_tasks`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from spsr_cli.model.nse import CONTEXT_OFFSETS, NSEConfig, non_overlap_distance
from spsr_cli.train.config import ConfigError, build_config, load_typed_config
from spsr_cli.train.nse_tasks import context_offsets, fewest_negative_candidates

METHODS = ("contrastive", "jigsaw")
#: ``kind`` of an NSE run's checkpoints (a generator run's have none).
NSE_CHECKPOINT_KIND = "nse"


@dataclass
class NSEDataSection:
    """HR crops for NSE training (no LR needed). ``holdout_percent`` of the files (by a
    hash of the name) are kept out of training for evaluation; ``eval_crops`` fixed crops
    are taken from each of them."""

    hr_dirs: list[str] = field(default_factory=list)
    synthetic: int = 0
    crop_size: int = 128
    batch_size: int = 8
    flip: bool = True
    rotate: bool = True
    holdout_percent: int = 10
    eval_crops: int = 4
    cache_mb: int = 1024


@dataclass
class NSETaskSection:
    """The self-supervised task (see the module docstring)."""

    method: str = "contrastive"
    variants: list[str] = field(default_factory=lambda: ["horizontal", "vertical", "cross"])
    anchors: int = 16  # anchors per image and variant (contrastive)
    negatives: int = 16  # negatives per anchor
    temperature: float = 64.0
    context_offset: int = 1  # neighbour distance in feature positions (1 = 4 px)
    puzzles: int = 16  # 2x2 puzzles per image (jigsaw)
    jigsaw_gap: int = 8  # cell distance in feature positions (>= 8: no shared pixels)
    hidden: int = 256  # width of the heads' hidden layers


@dataclass
class NSETrainSection:
    """Adam, learning rate x ``gamma`` every ``lr_step`` steps (paper: 1e-3, x0.2 every 20 epochs)."""

    steps: int = 3000
    lr: float = 1e-3
    lr_step: int = 1200
    gamma: float = 0.2
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 50
    eval_every: int = 1000


@dataclass
class NSETrainConfig:
    """Everything an NSE training run needs (stored with the run and every checkpoint)."""

    model: NSEConfig = field(default_factory=NSEConfig)
    data: NSEDataSection = field(default_factory=NSEDataSection)
    task: NSETaskSection = field(default_factory=NSETaskSection)
    train: NSETrainSection = field(default_factory=NSETrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NSETrainConfig:
        cfg = build_config(cls, data)
        validate_nse_config(cfg)
        return cfg


def validate_nse_config(cfg: NSETrainConfig) -> None:
    """Range checks; raises :class:`ConfigError` naming the key and the fix."""
    d, k, t = cfg.data, cfg.task, cfg.train
    if k.method not in METHODS:
        raise ConfigError(f"task.method must be one of {', '.join(METHODS)}, got {k.method!r}")
    bad = [v for v in k.variants if v not in CONTEXT_OFFSETS]
    if bad or not k.variants:
        raise ConfigError(f"task.variants must list some of {', '.join(CONTEXT_OFFSETS)}, got {k.variants}")
    if d.crop_size <= 0 or d.crop_size % 4:
        raise ConfigError(f"data.crop_size must be a positive multiple of 4, got {d.crop_size}")
    for key, value in (
        ("data.batch_size", d.batch_size),
        ("task.anchors", k.anchors),
        ("task.negatives", k.negatives),
        ("task.context_offset", k.context_offset),
        ("task.puzzles", k.puzzles),
        ("task.jigsaw_gap", k.jigsaw_gap),
        ("task.hidden", k.hidden),
        ("train.steps", t.steps),
        ("train.lr_step", t.lr_step),
        ("train.checkpoint_every", t.checkpoint_every),
        ("train.log_every", t.log_every),
        ("train.eval_every", t.eval_every),
        ("data.eval_crops", d.eval_crops),
    ):
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if not 0 <= d.holdout_percent < 100:
        raise ConfigError(f"data.holdout_percent must be in [0, 100), got {d.holdout_percent}")
    if k.temperature <= 0 or t.lr <= 0 or not 0 < t.gamma <= 1:
        raise ConfigError(
            f"task.temperature and train.lr must be > 0 and train.gamma in (0, 1], got "
            f"{k.temperature}, {t.lr}, {t.gamma}"
        )
    side = d.crop_size // 4
    if k.method == "jigsaw" and k.jigsaw_gap >= side:
        raise ConfigError(
            f"task.jigsaw_gap {k.jigsaw_gap} does not fit a {side}x{side} feature map "
            f"(data.crop_size {d.crop_size} / 4); raise data.crop_size or lower the gap"
        )
    if k.method == "contrastive":
        for variant in k.variants:
            offsets = context_offsets(variant, k.context_offset)
            fewest = fewest_negative_candidates(side, side, offsets, non_overlap_distance())
            if fewest < k.negatives:
                raise ConfigError(
                    f"with data.crop_size {d.crop_size}, some {variant} anchors have only {fewest} non-overlapping "
                    f"negative positions but task.negatives is {k.negatives}; raise data.crop_size or lower "
                    "task.negatives"
                )


def load_nse_config(path: Union[str, Path, None] = None, overrides: Union[list[str], None] = None) -> NSETrainConfig:
    """A YAML/TOML NSE config (defaults when ``path`` is None) with ``section.key=value`` overrides."""
    return load_typed_config(NSETrainConfig, path, overrides)


__all__ = [
    "METHODS",
    "NSE_CHECKPOINT_KIND",
    "NSEDataSection",
    "NSETaskSection",
    "NSETrainConfig",
    "NSETrainSection",
    "load_nse_config",
    "validate_nse_config",
]
