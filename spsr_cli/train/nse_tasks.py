"""The NSE training tasks: where their samples come from and how they are scored.

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

Samplers take a ``numpy`` generator, so the loop (:mod:`spsr_cli.train.nse_loop`) makes
every step's samples a pure function of the seed and the step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from spsr_cli.model.nse import CONTEXT_OFFSETS, ContrastiveHead, JigsawHead, NSENet, non_overlap_distance

if TYPE_CHECKING:
    from spsr_cli.train.nse_config import NSETrainConfig

#: Jigsaw classes: slot k of the classifier input holds grid cell PERMUTATIONS[label][k];
#: cells are numbered in raster order (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right).
PERMUTATIONS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(4)))


# ---------------------------------------------------------------- sampling


def context_offsets(variant: str, distance: int) -> tuple[tuple[int, int], ...]:
    """(dy, dx) of a variant's context positions (``CONTEXT_OFFSETS[variant]``) ``distance`` positions away."""
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
    rng: np.random.Generator,
    *,
    batch: int,
    height: int,
    width: int,
    offsets,
    anchors: int,
    negatives: int,
    min_distance: int,
) -> ContrastiveSample:
    """``anchors`` anchors per image (context inside the map) and, for each, ``negatives``
    distinct positions of the same map at Chebyshev distance >= ``min_distance`` from the
    anchor and from every context position."""
    margin = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    ys, xs = np.mgrid[margin : height - margin, margin : width - margin]
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
                raise ValueError(
                    f"anchor ({y}, {x}) of a {height}x{width} map has only {len(candidates)} "
                    f"non-overlapping negatives, {negatives} wanted; use larger crops"
                )
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


def sample_jigsaw(
    rng: np.random.Generator, *, batch: int, height: int, width: int, gap: int, puzzles: int
) -> JigsawSample:
    """``puzzles`` 2x2 grids per image (cells ``gap`` positions apart) with uniform random labels."""
    if height <= gap or width <= gap:
        raise ValueError(f"a {height}x{width} feature map cannot hold a 2x2 grid with gap {gap}")
    image = np.repeat(np.arange(batch), puzzles)
    y = rng.integers(0, height - gap, size=batch * puzzles)
    x = rng.integers(0, width - gap, size=batch * puzzles)
    cells = np.stack([y * width + x, y * width + x + gap, (y + gap) * width + x, (y + gap) * width + x + gap], 1)
    label = rng.integers(0, len(PERMUTATIONS), size=batch * puzzles)
    return JigsawSample(image, cells, label)


# ---------------------------------------------------------------- task losses


def _flat(features: torch.Tensor) -> torch.Tensor:
    """N x C x h x w -> N x (h*w) x C."""
    return features.flatten(2).transpose(1, 2)


def info_nce(
    pred: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE with cosine similarity: pred, positive A x C; negatives A x K x C.

    ``logits = temperature * cos(pred, [positive, negatives])``; loss = cross-entropy with
    the positive as the class (mean over A). Accuracy counts the positive scoring strictly
    above every negative. Returns (loss, accuracy) 0-dim tensors.
    """
    candidates = torch.cat([positive.unsqueeze(1), negatives], 1)
    logits = temperature * (
        F.normalize(pred, dim=-1, eps=1e-8).unsqueeze(1) * F.normalize(candidates, dim=-1, eps=1e-8)
    ).sum(-1)
    loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
    accuracy = (logits[:, 0] > logits[:, 1:].max(1).values).float().mean()
    return loss, accuracy.detach()


def contrastive_loss(
    features: torch.Tensor, head: ContrastiveHead, sample: ContrastiveSample, variant: str, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
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
    order = np.array(PERMUTATIONS)[sample.label]  # P x 4 cell ids per slot
    positions = np.take_along_axis(sample.cells, order, axis=1)  # P x 4 flat positions per slot
    img = torch.as_tensor(sample.image, device=features.device)
    tiles = flat[img[:, None], torch.as_tensor(positions, device=features.device)]  # P x 4 x C
    return tiles.reshape(len(tiles), -1)


def jigsaw_loss(features: torch.Tensor, head: JigsawHead, sample: JigsawSample) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the permutation classifier and its accuracy."""
    logits = head(jigsaw_inputs(features, sample))
    target = torch.as_tensor(sample.label, device=features.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean().detach()


def task_loss(
    cfg: NSETrainConfig, model: NSENet, head: torch.nn.Module, crops: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
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
        sample = sample_contrastive(
            rng,
            batch=b,
            height=h,
            width=w,
            offsets=context_offsets(variant, k.context_offset),
            anchors=k.anchors,
            negatives=k.negatives,
            min_distance=non_overlap_distance(),
        )
        loss, acc = contrastive_loss(features, head, sample, variant, k.temperature)
        losses.append(loss)
        logs[f"accuracy_{variant}"] = float(acc)
    loss = torch.stack(losses).mean()
    logs["loss"] = float(loss.detach())
    logs["accuracy"] = float(np.mean([logs[f"accuracy_{v}"] for v in k.variants]))
    return loss, logs


def build_head(cfg: NSETrainConfig) -> torch.nn.Module:
    """The task's head: a :class:`JigsawHead` or a :class:`ContrastiveHead` over the configured variants."""
    c = cfg.model.channels
    if cfg.task.method == "jigsaw":
        return JigsawHead(c, cfg.task.hidden)
    return ContrastiveHead(c, cfg.task.hidden, tuple(cfg.task.variants))


__all__ = [
    "PERMUTATIONS",
    "ContrastiveSample",
    "JigsawSample",
    "build_head",
    "context_offsets",
    "contrastive_loss",
    "fewest_negative_candidates",
    "info_nce",
    "jigsaw_inputs",
    "jigsaw_loss",
    "sample_contrastive",
    "sample_jigsaw",
    "task_loss",
]
