"""Typed training configuration: YAML/TOML file -> dataclasses, with ``key=value`` overrides.

One :class:`TrainConfig` describes a run completely. It is written next to the run
(``config.yaml``) and stored inside every checkpoint, so a run can always be resumed
or inspected without re-specifying anything by hand.

The reading machinery is shared with the other training configs (the NSE one,
:mod:`spsr_cli.train.nse_config`): :func:`read_config_file` (YAML/TOML -> mapping),
:func:`apply_overrides`, :func:`build_config` (mapping -> nested dataclasses, every key and
type checked), :func:`load_typed_config` (all three), and :func:`write_config` (the one
atomic ``config.yaml`` writer).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from spsr_cli.errors import UsageError
from spsr_cli.files import write_text_atomic
from spsr_cli.model.spsr import SPSRConfig

STAGES = ("psnr", "gan")
BACKBONES = ("vgg19", "vgg16", "none")
AMP_MODES = ("auto", "bf16", "off")
#: Objectives of ``loss.preset`` and the structure extractor each uses by default (None: none).
PRESETS = ("spsr-g", "spsr-p", "spsr-j")
PRESET_NSE = {"spsr-p": "nse-contrastive", "spsr-j": "nse-jigsaw"}
#: ``train.trainable``: which generator parts (``spsr_cli.model.spsr.PARTS``) learn; the rest are frozen.
TRAINABLE = {
    "all": ("trunk", "branch", "fusion"),
    "branch+fusion": ("branch", "fusion"),
    "fusion": ("fusion",),
    "branch": ("branch",),
}


_C = typing.TypeVar("_C")


class ConfigError(UsageError):
    """A config file or an override names an unknown key or holds a bad value."""


@dataclass
class DataSection:
    """Training images.

    ``hr_dirs``: folders of HR images; LR is made from every random HR crop with the
    MATLAB-compatible bicubic (:mod:`spsr_cli.io.imresize`). ``lr_dirs``: when given
    (one per HR folder), paired mode: LR files with the same stem are cropped at the
    matching position instead. ``synthetic``: that many generated images (shapes,
    stripes, gradients) join the pool; smoke tests and ``configs/tiny-cpu.yaml`` use
    them. ``batch_size`` is per process. ``holdout_percent``: a file is held out of
    training (for validation) when ``sha256(file name) mod 100 < holdout_percent``.
    """

    hr_dirs: list[str] = field(default_factory=list)
    lr_dirs: list[str] = field(default_factory=list)
    synthetic: int = 0
    crop_size: int = 128
    batch_size: int = 30
    flip: bool = True
    rotate: bool = True
    quantize_lr: bool = True
    cache_mb: int = 4096
    num_workers: int = 0
    holdout_percent: int = 0


@dataclass
class LossSection:
    """SPSR-G weights used by ``--stage gan`` (the paper's values), plus the related
    papers' structure losses (Gradient Variance, second-order gradient; default off).

    ``preset`` picks the objective: ``spsr-g`` (gradient-space losses, the structure
    weights are ignored) or ``spsr-p`` / ``spsr-j`` (TPAMI: the image GAN and the
    gradient-space losses ``gan``, ``gradient_pixel``, ``gradient_gan`` are ignored and
    replaced by ``structure_pixel`` (L1 between normalised NSE features of SR and HR)
    and ``structure_gan`` (RaGAN on NSE feature maps)). ``nse``: the structure extractor,
    a file or a registered name; null = the preset's shipped one (PRESET_NSE).
    """

    pixel: float = 0.01
    perceptual: float = 1.0
    gan: float = 0.005
    gradient_pixel: float = 0.01
    gradient_gan: float = 0.005
    branch: float = 0.5
    gradient_variance: float = 0.0
    second_order: float = 0.0
    gv_patch_size: int = 8
    perceptual_backbone: str = "vgg19"
    d_channels: int = 64
    preset: str = "spsr-g"
    nse: Union[str, None] = None
    structure_pixel: float = 1.0
    structure_gan: float = 0.005

    def nse_spec(self) -> Union[str, None]:
        """The NSE the preset uses (``nse`` or the preset's shipped one); None for spsr-g."""
        if self.preset not in PRESET_NSE:
            return None
        return self.nse or PRESET_NSE[self.preset]


@dataclass
class PsnrLossSection:
    """Weights used by ``--stage psnr`` (warm-up: pixel L1 and gradient-branch L1 only)."""

    pixel: float = 1.0
    branch: float = 0.5


@dataclass
class PartRates:
    """Learning-rate factors per generator part (``spsr_cli.model.spsr.PARTS``): each part's Adam
    group learns at ``train.lr`` times its factor. ``trunk`` is the SR branch (RRDB trunk and
    upsampler), ``branch`` the gradient branch, ``fusion`` the fusion block. A frozen part
    (``train.trainable``) never changes whatever its factor."""

    trunk: float = 1.0
    branch: float = 1.0
    fusion: float = 1.0


@dataclass
class TrainSection:
    """Optimisation and loop settings (Adam + MultiStep as in the paper).

    ``grad_clip``: max global gradient norm for G and for the Ds (0: no clipping, as in
    the paper); the generator's norm is logged as ``grad_norm_g`` either way.
    ``threads``: CPU threads for torch in this process (0 keeps torch's default; 1 is
    fastest for tiny models and for several processes sharing a few cores).
    ``d_warmup_steps``: the first steps train only the discriminators (the generator is
    frozen), so fresh discriminators do not push a pretrained generator around.
    ``trainable``: which generator parts learn (:data:`TRAINABLE`: ``all``,
    ``branch+fusion``, ``fusion``, ``branch``); frozen parts get no gradient and no
    autograd graph, so a step pays only for the trainable parts' backward. During the
    first ``fusion_only_steps`` steps only ``fusion`` trains whatever this says.
    ``lr_parts``: factors of ``lr`` per generator part (:class:`PartRates`), so the whole
    network can train with the trunk gently and the fusion and gradient branch faster.
    ``time_limit_min``: wall-clock budget of the loop in minutes (0: none). When it runs
    out, the run checkpoints, validates and stops as if ``steps`` were reached, so a
    time-boxed GPU lease always ends with its latest weights saved.
    """

    stage: str = "gan"
    steps: int = 500_000
    lr: float = 1e-4
    lr_d: float = 1e-4
    lr_parts: PartRates = field(default_factory=PartRates)
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [50_000, 100_000, 200_000, 300_000])
    gamma: float = 0.5
    grad_clip: float = 0.0
    fusion_only_steps: int = 5000
    trainable: str = "all"
    d_warmup_steps: int = 0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    amp: str = "auto"
    channels_last: bool = True
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    log_every: int = 100
    init: Union[str, None] = None
    time_limit_min: float = 0.0


@dataclass
class ValidationSection:
    """Validation, scored like ``spsr eval`` (PSNR/SSIM on the spsr-paper protocol, LPIPS).

    On a folder of HR images (``hr_dir``; LR made like ``spsr eval`` does, or from the paired
    ``lr_dir``), or, when ``hr_dir`` is null and ``data.holdout_percent`` > 0, on fixed
    crops of ``crop_size`` HR pixels of each held-out training image (never trained on).
    ``max_images`` bounds either; ``crops_per_image`` fixed crops (along the diagonal) are taken
    from each held-out image, so more crops can shrink the checkpoint-to-checkpoint noise.
    The EMA generator of the validation with the lowest LPIPS at PSNR >= ``psnr_floor`` (dB;
    0: no floor) is kept as the run's ``best.pt``. ``lpips``: score LPIPS
    too (its weights are fetched like ``spsr eval``'s when not cached).
    """

    hr_dir: Union[str, None] = None
    lr_dir: Union[str, None] = None
    every: int = 5000
    max_images: int = 10
    crop_size: int = 192
    crops_per_image: int = 1
    psnr_floor: float = 0.0
    lpips: bool = True


@dataclass
class LoggingSection:
    """JSON-lines logs always; TensorBoard and the rich progress display optional."""

    tensorboard: bool = False
    progress: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs."""

    model: SPSRConfig = field(default_factory=SPSRConfig)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    psnr_loss: PsnrLossSection = field(default_factory=PsnrLossSection)
    train: TrainSection = field(default_factory=TrainSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict; missing keys keep their defaults, unknown keys raise."""
        cfg = _build(cls, data, prefix="")
        validate_config(cfg)
        return cfg

    def spsr_config(self) -> SPSRConfig:
        """The generator's :class:`SPSRConfig` (the ``model`` section itself)."""
        return self.model


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, inner, key) for v in value]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            if isinstance(value, bool):  # YAML 1.1 reads a bare off/on/no/yes as a boolean
                return "on" if value else "off"
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(types))}")
    kwargs = {}
    for name, tp in types.items():
        if name not in data:
            continue
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(data[name], tp, key)
    try:
        return cls(**kwargs)
    except ValueError as err:  # e.g. SPSRConfig's own range checks
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<top>'}': {err}") from None


def validate_config(cfg: TrainConfig) -> None:
    """Check value ranges and combinations; raises :class:`ConfigError` naming the key."""
    t, d, m = cfg.train, cfg.data, cfg.model
    if t.stage not in STAGES:
        raise ConfigError(f"train.stage must be one of {', '.join(STAGES)}, got {t.stage!r}")
    if t.amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {t.amp!r}")
    if t.trainable not in TRAINABLE:
        raise ConfigError(f"train.trainable must be one of {', '.join(TRAINABLE)}, got {t.trainable!r}")
    if not 0 <= d.holdout_percent < 100:
        raise ConfigError(f"data.holdout_percent must be in [0, 100), got {d.holdout_percent}")
    if cfg.validation.crop_size <= 0 or cfg.validation.crop_size % m.scale:
        raise ConfigError(
            f"validation.crop_size must be a positive multiple of model.scale ({m.scale}), "
            f"got {cfg.validation.crop_size}"
        )
    if cfg.loss.preset not in PRESETS:
        raise ConfigError(f"loss.preset must be one of {', '.join(PRESETS)}, got {cfg.loss.preset!r}")
    if cfg.loss.perceptual_backbone not in BACKBONES:
        raise ConfigError(
            f"loss.perceptual_backbone must be one of {', '.join(BACKBONES)}, got {cfg.loss.perceptual_backbone!r}"
        )
    if m.scale not in (2, 4, 8):
        raise ConfigError(f"model.scale must be 2, 4 or 8, got {m.scale}")
    if d.crop_size <= 0 or d.crop_size % m.scale:
        raise ConfigError(f"data.crop_size must be a positive multiple of model.scale ({m.scale}), got {d.crop_size}")
    if t.stage == "gan" and d.crop_size % 32:
        # The VGG-style discriminators halve the size five times.
        raise ConfigError(
            f"data.crop_size must be a multiple of 32 for --stage gan (discriminator input), got {d.crop_size}"
        )
    if d.lr_dirs and len(d.lr_dirs) != len(d.hr_dirs):
        raise ConfigError(
            f"data.lr_dirs must list one LR folder per data.hr_dirs entry ({len(d.hr_dirs)}), got {len(d.lr_dirs)}"
        )
    for key, value in (
        ("data.batch_size", d.batch_size),
        ("train.steps", t.steps),
        ("train.checkpoint_every", t.checkpoint_every),
        ("train.log_every", t.log_every),
        ("validation.every", cfg.validation.every),
        ("validation.crops_per_image", cfg.validation.crops_per_image),
        ("model.nf", m.nf),
        ("model.nb", m.nb),
        ("model.gc", m.gc),
        ("loss.d_channels", cfg.loss.d_channels),
        ("loss.gv_patch_size", cfg.loss.gv_patch_size),
    ):
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    for key, value in (
        ("train.fusion_only_steps", t.fusion_only_steps),
        ("train.grad_clip", t.grad_clip),
        ("train.d_warmup_steps", t.d_warmup_steps),
        ("data.num_workers", d.num_workers),
        ("data.synthetic", d.synthetic),
        ("train.threads", t.threads),
        ("data.cache_mb", d.cache_mb),
        ("train.keep_checkpoints", t.keep_checkpoints),
    ):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    for f in dataclasses.fields(t.lr_parts):
        value = getattr(t.lr_parts, f.name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"train.lr_parts.{f.name} must be a positive factor of train.lr, got {value} "
                "(freeze a part with train.trainable instead)"
            )
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    for f in dataclasses.fields(cfg.loss):
        value = getattr(cfg.loss, f.name)
        if isinstance(value, float) and value < 0:
            raise ConfigError(f"loss.{f.name} must be >= 0, got {value}")
    _check_finite(cfg, "")
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr} (freeze parts with train.trainable instead)")
    if not t.lr_d >= 0:
        raise ConfigError(f"train.lr_d must be >= 0, got {t.lr_d}")
    for key, value in (("train.beta1", t.beta1), ("train.beta2", t.beta2)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key} must be in [0, 1) (Adam's moment decay), got {value}")
    if not t.weight_decay >= 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay}")
    if not t.gamma > 0:
        raise ConfigError(
            f"train.gamma must be positive (the factor the learning rate is multiplied by at each of "
            f"train.milestones), got {t.gamma}"
        )
    if any(step <= 0 for step in t.milestones):
        raise ConfigError(f"train.milestones must be positive step numbers, got {t.milestones}")


def _check_finite(section: Any, prefix: str) -> None:
    """Every float value of the config (nested sections too) must be a finite number: ``lr: .nan`` or
    ``.inf`` passes every range check and ends in a traceback (or a silent divergence) later."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name} must be a finite number, got {value}")


def default_config() -> TrainConfig:
    """The paper's recipe (SPSR x4) with no data folders set."""
    return TrainConfig()


def build_config(cls: type[_C], data: Any) -> _C:
    """A config dataclass ``cls`` (sections are nested dataclasses) from a nested mapping: missing keys
    keep their defaults; unknown keys and values of the wrong type raise :class:`ConfigError` naming the key.
    Range checks are the config's own (its ``from_dict``)."""
    return _build(cls, data, prefix="")


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML or TOML config file holds (empty for an empty file)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing .yaml or .toml file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                raise ConfigError(f"{path}: TOML configs need Python 3.11+; use YAML instead")
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"config file {path} could not be parsed: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.lr=2e-4'`` -> (``['train', 'lr']``, ``'2e-4'`` parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.lr=2e-4)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"override {text!r} must name a section and a key, e.g. train.lr=2e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested dict ``data`` with ``section.key=value`` overrides applied."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def load_typed_config(cls: Any, path: Union[str, Path, None] = None, overrides: Union[list[str], None] = None) -> Any:
    """``cls.from_dict`` of a YAML/TOML file (the defaults when ``path`` is None) with ``section.key=value``
    overrides applied; ``cls`` is a config dataclass with a validating ``from_dict``."""
    data = read_config_file(Path(path)) if path is not None else {}
    return cls.from_dict(apply_overrides(data, list(overrides or [])))


def load_config(path: Union[str, Path, None] = None, overrides: Union[list[str], None] = None) -> TrainConfig:
    """Read a YAML/TOML config (or the defaults when ``path`` is None) and apply overrides."""
    return load_typed_config(TrainConfig, path, overrides)


def dump_yaml(cfg: Any) -> str:
    """A resolved config (anything with ``to_dict()``: :class:`TrainConfig`, the NSE config) as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def write_config(cfg: Any, path: Path) -> None:
    """Write a resolved config (see :func:`dump_yaml`) as YAML, atomically
    (:func:`spsr_cli.files.write_text_atomic`)."""
    write_text_atomic(path, dump_yaml(cfg))


def resolve_run_config(
    *, config_path: Union[str, Path, None], overrides: list[str], run_dir: Path, resume: bool
) -> TrainConfig:
    """The config of ``spsr train``: ``--config`` + overrides, or with ``--resume`` and no
    ``--config`` the run's stored ``config.yaml`` + overrides."""
    if config_path is None:
        stored = Path(run_dir) / "config.yaml"
        if resume and stored.is_file():
            return load_config(stored, overrides)
        raise ConfigError(
            "--config FILE is required (start from configs/spsr-x4.yaml or `spsr train --print-config`)"
            + ("" if not resume else f"; {stored} does not exist to resume from")
        )
    return load_config(config_path, overrides)
