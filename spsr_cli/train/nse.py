"""Training the neural structure extractors: ``spsr train nse --method contrastive|jigsaw``.

Two self-supervised tasks on random HR crops (TPAMI SPSR, section on NSEs):

* **contrastive** (NSE-P): for an anchor position of the NSE feature map, the feature
  vectors of fixed neighbours (``horizontal``: left and right, ``vertical``: above and
  below, ``cross``: all four; ``task.context_offset`` positions away) go through an
  autoregressive MLP that predicts the anchor's vector. InfoNCE with cosine similarity
  scaled by ``task.temperature`` (64 in the paper) scores the prediction against the
  anchor (positive) and ``task.negatives`` vectors of the same feature map whose receptive
  fields overlap neither the positive's nor the inputs' (Chebyshev distance >= 8 feature
  positions = 32 px for the 31-px receptive field). Metric: top-1 accuracy.
* **jigsaw** (NSE-J): four non-overlapping neighbouring vectors in a 2x2 grid (cells
  ``task.jigsaw_gap`` positions apart) are concatenated in one of the 24 permutations
  and a 3-layer MLP classifies the permutation (cross-entropy). Metric: accuracy.

Batches and task samples of step ``s`` are a pure function of ``(seed, s)``, so a
resumed run repeats the uninterrupted one. Evaluation uses held-out images of the same
folders: a file is held out when ``sha256(file name) mod 100 < data.holdout_percent``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from spsr_cli.errors import UsageError
from spsr_cli.model.nse import CONTEXT_OFFSETS, ContrastiveHead, JigsawHead, NSEConfig, NSENet, non_overlap_distance
from spsr_cli.train.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from spsr_cli.train.config import ConfigError, _build, _read_mapping, apply_overrides

log = logging.getLogger(__name__)

METHODS = ("contrastive", "jigsaw")
#: Jigsaw classes: slot k of the classifier input holds grid cell PERMUTATIONS[label][k];
#: cells are numbered in raster order (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right).
PERMUTATIONS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(4)))
LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.yaml"
CHECKPOINT_KIND = "nse"


# ---- config ---------------------------------------------------------------------------

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
    anchors: int = 16          # anchors per image and variant (contrastive)
    negatives: int = 16        # negatives per anchor
    temperature: float = 64.0
    context_offset: int = 1    # neighbour distance in feature positions (1 = 4 px)
    puzzles: int = 16          # 2x2 puzzles per image (jigsaw)
    jigsaw_gap: int = 8        # cell distance in feature positions (>= 8: no shared pixels)
    hidden: int = 256          # width of the heads' hidden layers


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
        cfg = _build(cls, data, prefix="")
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
    for key, value in (("data.batch_size", d.batch_size), ("task.anchors", k.anchors), ("task.negatives", k.negatives),
                       ("task.context_offset", k.context_offset), ("task.puzzles", k.puzzles),
                       ("task.jigsaw_gap", k.jigsaw_gap), ("task.hidden", k.hidden), ("train.steps", t.steps),
                       ("train.lr_step", t.lr_step), ("train.checkpoint_every", t.checkpoint_every),
                       ("train.log_every", t.log_every), ("train.eval_every", t.eval_every),
                       ("data.eval_crops", d.eval_crops)):
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if not 0 <= d.holdout_percent < 100:
        raise ConfigError(f"data.holdout_percent must be in [0, 100), got {d.holdout_percent}")
    if k.temperature <= 0 or t.lr <= 0 or not 0 < t.gamma <= 1:
        raise ConfigError(f"task.temperature and train.lr must be > 0 and train.gamma in (0, 1], got "
                          f"{k.temperature}, {t.lr}, {t.gamma}")
    side = d.crop_size // 4
    if k.method == "jigsaw" and k.jigsaw_gap >= side:
        raise ConfigError(f"task.jigsaw_gap {k.jigsaw_gap} does not fit a {side}x{side} feature map "
                          f"(data.crop_size {d.crop_size} / 4); raise data.crop_size or lower the gap")
    if k.method == "contrastive":
        for variant in k.variants:
            fewest = fewest_negative_candidates(side, side, _offsets(variant, k.context_offset), non_overlap_distance())
            if fewest < k.negatives:
                raise ConfigError(
                    f"with data.crop_size {d.crop_size}, some {variant} anchors have only {fewest} non-overlapping "
                    f"negative positions but task.negatives is {k.negatives}; raise data.crop_size or lower task.negatives"
                )


def load_nse_config(path: Union[str, Path, None] = None, overrides: Union[list[str], None] = None) -> NSETrainConfig:
    """A YAML/TOML NSE config (defaults when ``path`` is None) with ``section.key=value`` overrides."""
    data = _read_mapping(Path(path)) if path is not None else {}
    return NSETrainConfig.from_dict(apply_overrides(data, list(overrides or [])))


# ---- sampling -------------------------------------------------------------------------

def _offsets(variant: str, distance: int) -> tuple[tuple[int, int], ...]:
    return tuple((dy * distance, dx * distance) for dy, dx in CONTEXT_OFFSETS[variant])


def _far_mask(height: int, width: int, points: np.ndarray, min_distance: int) -> np.ndarray:
    """h x w bool: positions at Chebyshev distance >= ``min_distance`` from every (y, x) in ``points``."""
    yy, xx = np.mgrid[0:height, 0:width]
    dist = np.maximum(np.abs(yy[None] - points[:, 0, None, None]), np.abs(xx[None] - points[:, 1, None, None]))
    return (dist >= min_distance).all(axis=0)


def fewest_negative_candidates(height: int, width: int, offsets, min_distance: int) -> int:
    """Smallest number of admissible negative positions over all valid anchors (0 if none fit)."""
    margin = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    if height <= 2 * margin or width <= 2 * margin:
        return 0
    fewest = height * width
    for y in range(margin, height - margin):
        for x in range(margin, width - margin):
            points = np.array([(y, x)] + [(y + dy, x + dx) for dy, dx in offsets])
            fewest = min(fewest, int(_far_mask(height, width, points, min_distance).sum()))
    return fewest


@dataclass(frozen=True)
class ContrastiveSample:
    """Flat positions (``y * width + x``) into each image's feature map: ``image`` (A,),
    ``anchor`` (A,), ``context`` (A, k) in the variant's offset order, ``negatives`` (A, K)."""

    image: np.ndarray
    anchor: np.ndarray
    context: np.ndarray
    negatives: np.ndarray


def sample_contrastive(
    rng: np.random.Generator, *, batch: int, height: int, width: int, offsets, anchors: int, negatives: int,
    min_distance: int,
) -> ContrastiveSample:
    """``anchors`` anchors per image (context inside the map) and, for each, ``negatives``
    distinct positions of the same map at Chebyshev distance >= ``min_distance`` from the
    anchor and from every context position."""
    margin = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    ys, xs = np.mgrid[margin:height - margin, margin:width - margin]
    valid = np.stack([ys.ravel(), xs.ravel()], 1)
    if len(valid) == 0:
        raise ValueError(f"a {height}x{width} feature map has no anchor with neighbours {offsets}")
    rows_img, rows_anchor, rows_ctx, rows_neg = [], [], [], []
    for b in range(batch):
        picked = valid[rng.choice(len(valid), size=anchors, replace=anchors > len(valid))]
        for y, x in picked:
            ctx = np.array([(y + dy, x + dx) for dy, dx in offsets])
            mask = _far_mask(height, width, np.vstack([[(y, x)], ctx]), min_distance).ravel()
            candidates = np.flatnonzero(mask)
            if len(candidates) < negatives:
                raise ValueError(f"anchor ({y}, {x}) of a {height}x{width} map has only {len(candidates)} "
                                 f"non-overlapping negatives, {negatives} wanted; use larger crops")
            rows_img.append(b)
            rows_anchor.append(y * width + x)
            rows_ctx.append(ctx[:, 0] * width + ctx[:, 1])
            rows_neg.append(rng.choice(candidates, size=negatives, replace=False))
    return ContrastiveSample(np.array(rows_img), np.array(rows_anchor), np.stack(rows_ctx), np.stack(rows_neg))


@dataclass(frozen=True)
class JigsawSample:
    """``image`` (P,), ``cells`` (P, 4) flat positions in raster order, ``label`` (P,) into PERMUTATIONS."""

    image: np.ndarray
    cells: np.ndarray
    label: np.ndarray


def sample_jigsaw(rng: np.random.Generator, *, batch: int, height: int, width: int, gap: int, puzzles: int) -> JigsawSample:
    """``puzzles`` 2x2 grids per image (cells ``gap`` positions apart) with uniform random labels."""
    if height <= gap or width <= gap:
        raise ValueError(f"a {height}x{width} feature map cannot hold a 2x2 grid with gap {gap}")
    image = np.repeat(np.arange(batch), puzzles)
    y = rng.integers(0, height - gap, size=batch * puzzles)
    x = rng.integers(0, width - gap, size=batch * puzzles)
    cells = np.stack([y * width + x, y * width + x + gap, (y + gap) * width + x, (y + gap) * width + x + gap], 1)
    label = rng.integers(0, len(PERMUTATIONS), size=batch * puzzles)
    return JigsawSample(image, cells, label)


# ---- task losses ----------------------------------------------------------------------

def _flat(features: torch.Tensor) -> torch.Tensor:
    """N x C x h x w -> N x (h*w) x C."""
    return features.flatten(2).transpose(1, 2)


def info_nce(pred: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE with cosine similarity: pred, positive A x C; negatives A x K x C.

    ``logits = temperature * cos(pred, [positive, negatives])``; loss = cross-entropy with
    the positive as the class (mean over A). Accuracy counts the positive scoring strictly
    above every negative. Returns (loss, accuracy) 0-dim tensors.
    """
    candidates = torch.cat([positive.unsqueeze(1), negatives], 1)
    logits = temperature * (F.normalize(pred, dim=-1, eps=1e-8).unsqueeze(1)
                            * F.normalize(candidates, dim=-1, eps=1e-8)).sum(-1)
    loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
    accuracy = (logits[:, 0] > logits[:, 1:].max(1).values).float().mean()
    return loss, accuracy.detach()


def contrastive_loss(features: torch.Tensor, head: ContrastiveHead, sample: ContrastiveSample, variant: str,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of one variant on N x C x h x w features (see :func:`info_nce`)."""
    flat = _flat(features)
    img = torch.as_tensor(sample.image, device=features.device)
    positive = flat[img, torch.as_tensor(sample.anchor, device=features.device)]
    context = flat[img[:, None], torch.as_tensor(sample.context, device=features.device)]
    negatives = flat[img[:, None], torch.as_tensor(sample.negatives, device=features.device)]
    pred = head(context.reshape(len(context), -1), variant)
    return info_nce(pred, positive, negatives, temperature)


def jigsaw_inputs(features: torch.Tensor, sample: JigsawSample) -> torch.Tensor:
    """P x 4C classifier inputs: slot k holds the vector of cell ``PERMUTATIONS[label][k]``."""
    flat = _flat(features)
    order = np.array(PERMUTATIONS)[sample.label]                       # P x 4 cell ids per slot
    positions = np.take_along_axis(sample.cells, order, axis=1)        # P x 4 flat positions per slot
    img = torch.as_tensor(sample.image, device=features.device)
    tiles = flat[img[:, None], torch.as_tensor(positions, device=features.device)]  # P x 4 x C
    return tiles.reshape(len(tiles), -1)


def jigsaw_loss(features: torch.Tensor, head: JigsawHead, sample: JigsawSample) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the permutation classifier and its accuracy."""
    logits = head(jigsaw_inputs(features, sample))
    target = torch.as_tensor(sample.label, device=features.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean().detach()


def task_loss(cfg: NSETrainConfig, model: NSENet, head: torch.nn.Module, crops: torch.Tensor,
              rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and accuracies of the configured task on a batch of crops (B x 3 x c x c in [0, 1])."""
    k = cfg.task
    features = model(crops)
    b, _, h, w = features.shape
    if k.method == "jigsaw":
        sample = sample_jigsaw(rng, batch=b, height=h, width=w, gap=k.jigsaw_gap, puzzles=k.puzzles)
        loss, acc = jigsaw_loss(features, head, sample)
        return loss, {"loss": float(loss.detach()), "accuracy": float(acc)}
    losses, logs = [], {}
    for variant in k.variants:
        sample = sample_contrastive(rng, batch=b, height=h, width=w, offsets=_offsets(variant, k.context_offset),
                                    anchors=k.anchors, negatives=k.negatives, min_distance=non_overlap_distance())
        loss, acc = contrastive_loss(features, head, sample, variant, k.temperature)
        losses.append(loss)
        logs[f"accuracy_{variant}"] = float(acc)
    loss = torch.stack(losses).mean()
    logs["loss"] = float(loss.detach())
    logs["accuracy"] = float(np.mean([logs[f"accuracy_{v}"] for v in k.variants]))
    return loss, logs


def build_head(cfg: NSETrainConfig) -> torch.nn.Module:
    c = cfg.model.channels
    if cfg.task.method == "jigsaw":
        return JigsawHead(c, cfg.task.hidden)
    return ContrastiveHead(c, cfg.task.hidden, tuple(cfg.task.variants))


# ---- data -----------------------------------------------------------------------------

class _Crops:
    """Random augmented HR crops of an image pool; batch of step ``s`` from ``rng(seed, s)``."""

    def __init__(self, cfg: NSETrainConfig) -> None:
        from spsr_cli.train.data import ImagePool, TrainBatches, is_held_out

        d = cfg.data
        pool = ImagePool(hr_dirs=d.hr_dirs, crop_size=d.crop_size, scale=4, cache_mb=d.cache_mb,
                         synthetic=d.synthetic, seed=cfg.train.seed)
        held = [r for r in pool.records if is_held_out(r.hr_path, d.holdout_percent)]
        train_pool, self.held_pool = copy.copy(pool), copy.copy(pool)
        train_pool.records = [r for r in pool.records if not is_held_out(r.hr_path, d.holdout_percent)]
        self.held_pool.records = held
        if not train_pool.records:
            raise UsageError("every training image is held out; lower data.holdout_percent or add images")
        self.names = {"train": [str(r.hr_path) for r in train_pool.records], "held_out": [str(r.hr_path) for r in held]}
        kw = dict(batch_size=d.batch_size, crop_size=d.crop_size, scale=4, seed=cfg.train.seed, flip=d.flip,
                  rotate=d.rotate)
        self.train = TrainBatches(train_pool, **kw)
        self.held = TrainBatches(self.held_pool, **{**kw, "flip": False, "rotate": False}) if held else None
        self.cfg = cfg

    @staticmethod
    def _stack(crops: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()

    def batch(self, rng: np.random.Generator) -> torch.Tensor:
        """B x 3 x c x c float32 in [0, 1]."""
        return self._stack([self.train.sample(rng)[1] for _ in range(self.cfg.data.batch_size)])

    def evaluation_batches(self) -> list[torch.Tensor]:
        """Fixed crops of the held-out images (``eval_crops`` each), in batches."""
        if self.held is None:
            return []
        rng = np.random.default_rng([self.cfg.train.seed, 2])
        crops = []
        for index in range(len(self.held_pool)):
            img, _ = self.held_pool.get(index)
            h, w = img.shape[:2]
            c = self.cfg.data.crop_size
            for _ in range(self.cfg.data.eval_crops):
                y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
                crops.append(img[y:y + c, x:x + c])
        size = max(self.cfg.data.batch_size, 1)
        return [self._stack(crops[i:i + size]) for i in range(0, len(crops), size)]


@torch.no_grad()
def evaluate(cfg: NSETrainConfig, model: NSENet, head: torch.nn.Module, batches: list[torch.Tensor],
             device: torch.device) -> dict[str, float]:
    """Mean task loss and accuracy over fixed held-out crops with fixed task samples."""
    was = model.training, head.training
    model.eval(), head.eval()
    rng = np.random.default_rng([cfg.train.seed, 3])
    rows = []
    try:
        for crops in batches:
            _, logs = task_loss(cfg, model, head, crops.to(device), rng)
            rows.append((len(crops), logs))
    finally:
        model.train(was[0]), head.train(was[1])
    total = sum(n for n, _ in rows)
    keys = rows[0][1].keys() if rows else ()
    out = {key: float(sum(n * logs[key] for n, logs in rows) / total) for key in keys}
    out["crops"] = float(total)
    return out


# ---- the loop -------------------------------------------------------------------------

@dataclass
class NSETrainResult:
    run_dir: Path
    step: int
    checkpoint: Union[Path, None]
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)


def train_nse(cfg: NSETrainConfig, run_dir: Union[str, Path], *, resume: bool = False,
              stop_after: Union[int, None] = None) -> NSETrainResult:
    """Train an NSE as ``cfg`` says under ``run_dir`` (checkpoints, ``log.jsonl``, ``config.yaml``).

    ``resume=True`` continues from the newest checkpoint (exactly: batches and task samples
    depend only on the seed and the step). ``stop_after`` stops early, as if killed (tests).
    """
    from spsr_cli.engine.device import resolve_device

    run_dir = Path(run_dir)
    t = cfg.train
    state = None
    if resume:
        latest = latest_checkpoint(run_dir)
        if latest is not None:
            state = load_checkpoint(latest)
            if state.get("kind") != CHECKPOINT_KIND or state["config"]["task"]["method"] != cfg.task.method \
                    or state["config"]["model"] != cfg.to_dict()["model"]:
                raise UsageError(f"cannot resume from {latest}: it is not an NSE run of method {cfg.task.method} "
                                 f"with model {cfg.to_dict()['model']}; resume without --config or start a new run")
    elif list_checkpoints(run_dir):
        raise UsageError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out")
    threads_before = torch.get_num_threads()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    model = NSENet(cfg.model).to(device)
    head = build_head(cfg).to(device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=t.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_step, gamma=t.gamma)
    start, seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        restore_rng_state(state["rng"])
        start, seconds = int(state["step"]), float(state.get("train_seconds", 0.0))
    data = _Crops(cfg)
    eval_batches = data.evaluation_batches()
    if not eval_batches:
        log.warning("no held-out images (data.holdout_percent=%d): accuracy is not evaluated", cfg.data.holdout_percent)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(_yaml(cfg), encoding="utf-8")
    (run_dir / "split.json").write_text(json.dumps(data.names, indent=1), encoding="utf-8")
    result = NSETrainResult(run_dir=run_dir, step=start, checkpoint=None, train_seconds=seconds)
    last = min(t.steps, stop_after) if stop_after is not None else t.steps
    latest_eval = state.get("evaluation") if state is not None else None
    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log_file:
        _row(log_file, {"event": "start", "step": start, "method": cfg.task.method, "device": str(device),
                        "train_images": len(data.names["train"]), "held_out_images": len(data.names["held_out"])})
        sums: dict[str, float] = {}
        window = 0
        tick = time.perf_counter()
        for step in range(start, last):
            began = time.perf_counter()
            rng = np.random.default_rng([t.seed, 1, step])
            crops = data.batch(rng).to(device)
            loss, logs = task_loss(cfg, model, head, crops, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_used = sched.get_last_lr()[0]
            sched.step()
            seconds += time.perf_counter() - began  # training time: evaluation and checkpoints excluded
            if not np.isfinite(logs["loss"]):
                raise UsageError(f"NSE training diverged at step {step + 1} (loss {logs['loss']}); lower train.lr")
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value
            window += 1
            done = step + 1
            if done % t.log_every == 0 or done == last:
                now = time.perf_counter()
                row = {"step": done, "lr": lr_used, "it_s": window / max(now - tick, 1e-9),
                       **{k: v / window for k, v in sums.items()}}
                tick, sums, window = now, {}, 0
                result.history.append(row)
                _row(log_file, row)
                log.info("step %d: loss %.4f, accuracy %.3f", done, row["loss"], row["accuracy"])
            if eval_batches and (done % t.eval_every == 0 or done == t.steps):
                latest_eval = {"step": done, **evaluate(cfg, model, head, eval_batches, device)}
                result.evaluation.append(latest_eval)
                _row(log_file, {"event": "evaluation", **latest_eval})
                log.info("step %d: held-out accuracy %.4f", done, latest_eval["accuracy"])
            if done % t.checkpoint_every == 0 or done == last:
                result.checkpoint = save_checkpoint(run_dir, done, {
                    "kind": CHECKPOINT_KIND, "config": cfg.to_dict(), "model": model.state_dict(),
                    "head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "rng": capture_rng_state(), "train_seconds": seconds,
                    "evaluation": latest_eval, "split": {k: len(v) for k, v in data.names.items()},
                }, keep=t.keep_checkpoints)
            result.step = done
        result.train_seconds = seconds
        _row(log_file, {"event": "stop", "step": result.step, "train_seconds": seconds})
    torch.set_num_threads(threads_before)
    return result


def _yaml(cfg: NSETrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def _row(fh, row: dict[str, Any]) -> None:
    fh.write(json.dumps({"time": time.time(), **row}) + "\n")
    fh.flush()


# ---- export ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NSEExport:
    name: str
    path: Path
    sha256: str
    size: int
    step: int
    metadata: dict[str, str]


def nse_from_checkpoint(state: dict[str, Any]) -> tuple[NSENet, NSETrainConfig]:
    cfg = NSETrainConfig.from_dict(state["config"])
    model = NSENet(cfg.model)
    model.load_state_dict(state["model"], strict=True)
    return model.eval(), cfg


def write_nse_from_checkpoint(state: dict[str, Any], path: Path, *, source: str, licence: str) -> NSEExport:
    """Write a checkpoint's NSE as float32 safetensors (config, task, evaluation in the metadata)."""
    from spsr_cli.weights.nse_files import write_nse_file

    model, cfg = nse_from_checkpoint(state)
    meta = {"method": cfg.task.method, "training_step": str(int(state["step"])),
            "training_seconds": f"{float(state.get('train_seconds', 0.0)):.1f}",
            "evaluation": json.dumps(state.get("evaluation")), "training_config": json.dumps(cfg.to_dict()),
            "source": source, "licence": licence}
    sha = write_nse_file(path, model, metadata=meta)
    return NSEExport(name=path.stem, path=path, sha256=sha, size=path.stat().st_size, step=int(state["step"]),
                     metadata=meta)


def export_nse(checkpoint: Path, state: dict[str, Any], *, name: str, licence: Union[str, None] = None,
               description: str = "", replace: bool = False) -> NSEExport:
    """``spsr train export`` of an NSE run: float32 safetensors under ``$SPSR_HOME/weights`` and an
    entry in the local registry's ``auxiliary`` list, so ``loss.nse: NAME`` finds it."""
    from spsr_cli.errors import UnknownModelError
    from spsr_cli.weights.nse_files import AUX_KIND, nse_entries as _auxiliary_entries
    from spsr_cli.weights.manifest import (
        FORMAT_VERSION, load_manifest, local_manifest_path, read_manifest_file, spsr_home, validate_name,
        write_json_atomic,
    )

    validate_name(name)
    packaged = load_manifest().auxiliary
    if name in packaged or (name in _auxiliary_entries() and not replace):
        raise UnknownModelError(f"a structure extractor named {name!r} exists already; choose another --name"
                                + ("" if name in packaged else " or pass --force"))
    licence = licence or "unspecified: trained locally with spsr train nse (check the licences of the data)"
    target = spsr_home() / "weights" / f"{name}.safetensors"
    source = f"spsr train nse: {checkpoint.resolve()} (step {int(state['step'])})"
    out = write_nse_from_checkpoint(state, target, source=source, licence=licence)
    path = local_manifest_path()
    data = read_manifest_file(path) if path.is_file() else {"format_version": FORMAT_VERSION, "default": None,
                                                            "models": []}
    aux = [a for a in data.get("auxiliary", []) if a.get("name") != name]
    aux.append({"name": name, "kind": AUX_KIND, "description": description, "licence": licence,
                "provenance": source, "method": out.metadata["method"],
                "evaluation": state.get("evaluation"), "size": out.size,
                "source": {"type": "file", "path": str(target.resolve()), "sha256": out.sha256}})
    data["auxiliary"] = aux
    write_json_atomic(path, data)
    return dataclasses.replace(out, name=name)
