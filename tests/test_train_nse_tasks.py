"""NSE tasks: InfoNCE and jigsaw losses vs numpy, sampling rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsr_cli.model.nse import CONTEXT_OFFSETS, JigsawHead
from spsr_cli.train.nse_tasks import (
    PERMUTATIONS,
    JigsawSample,
    info_nce,
    jigsaw_inputs,
    jigsaw_loss,
    sample_contrastive,
    sample_jigsaw,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _np_cross_entropy(logits: np.ndarray, target: np.ndarray) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-logp[np.arange(len(target)), target].mean())


def test_info_nce_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    pred, pos, neg = rng.normal(size=(5, 6)), rng.normal(size=(5, 6)), rng.normal(size=(5, 3, 6))
    pos[0] = pred[0] * 2.0  # a sure hit
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    cand = np.concatenate([pos[:, None], neg], 1)
    logits = 64.0 * (unit(pred)[:, None] * unit(cand)).sum(-1)
    loss, acc = info_nce(torch.tensor(pred), torch.tensor(pos), torch.tensor(neg), 64.0)
    assert float(loss) == pytest.approx(_np_cross_entropy(logits, np.zeros(5, int)), rel=1e-6)
    assert float(acc) == pytest.approx(np.mean(logits[:, 0] > logits[:, 1:].max(1)))
    assert np.mean(logits[:, 0] > logits[:, 1:].max(1)) >= 0.2  # row 0 at least


def test_info_nce_counts_ties_as_misses() -> None:
    z = torch.ones(2, 4)
    _, acc = info_nce(z, z, torch.ones(2, 3, 4), 64.0)
    assert float(acc) == 0.0


@pytest.mark.parametrize("variant", sorted(CONTEXT_OFFSETS))
def test_negatives_never_overlap_the_positive_or_the_inputs(variant: str) -> None:
    h, w = 24, 20
    s = sample_contrastive(
        np.random.default_rng(1),
        batch=3,
        height=h,
        width=w,
        offsets=CONTEXT_OFFSETS[variant],
        anchors=40,
        negatives=12,
        min_distance=8,
    )
    yx = lambda f: np.stack([f // w, f % w], -1)  # noqa: E731
    anchor, ctx, neg = yx(s.anchor), yx(s.context), yx(s.negatives)
    # the context is the variant's fixed neighbours, in order
    np.testing.assert_array_equal(ctx - anchor[:, None], np.broadcast_to(CONTEXT_OFFSETS[variant], ctx.shape))
    points = np.concatenate([anchor[:, None], ctx], 1)
    cheb = np.abs(neg[:, :, None] - points[:, None]).max(-1)
    assert cheb.min() >= 8  # receptive fields (31 px, stride 4) share no pixel
    assert all(len(set(row)) == len(row) for row in s.negatives)  # distinct negatives
    assert ((neg >= 0) & (neg < (h, w))).all() and ((ctx >= 0) & (ctx < (h, w))).all()
    assert set(s.image) == {0, 1, 2} and np.bincount(s.image).tolist() == [40, 40, 40]


def test_jigsaw_slots_hold_the_permuted_cells() -> None:
    assert len(PERMUTATIONS) == 24 and len(set(PERMUTATIONS)) == 24
    w = 12
    features = torch.zeros(1, 4, 12, w)
    cells = np.array([[1 * w + 2, 1 * w + 10, 9 * w + 2, 9 * w + 10]])  # 2x2 grid, gap 8, raster order
    for cell, flat in enumerate(cells[0]):
        features[0, cell, flat // w, flat % w] = 1.0  # cell k's vector is one-hot k
    for label in (0, 7, 23):
        tiles = jigsaw_inputs(features, JigsawSample(np.array([0]), cells, np.array([label])))
        slots = tiles.reshape(4, 4).argmax(1).tolist()  # which cell sits in each slot
        assert slots == list(PERMUTATIONS[label])
    s = sample_jigsaw(np.random.default_rng(0), batch=2, height=12, width=w, gap=8, puzzles=50)
    y, x = s.cells // w, s.cells % w
    np.testing.assert_array_equal(y[:, 2] - y[:, 0], 8)
    np.testing.assert_array_equal(x[:, 1] - x[:, 0], 8)
    np.testing.assert_array_equal(x[:, 3] - x[:, 2], 8)
    assert (s.label >= 0).all() and (s.label < 24).all() and len(set(s.label)) > 10


def test_jigsaw_loss_matches_numpy() -> None:
    torch.manual_seed(0)
    head = JigsawHead(3, 5)
    features = torch.rand(2, 3, 10, 10)
    sample = sample_jigsaw(np.random.default_rng(3), batch=2, height=10, width=10, gap=8, puzzles=3)
    loss, acc = jigsaw_loss(features, head, sample)
    flat = features.flatten(2).transpose(1, 2).numpy()
    rows = []
    for img, cells, label in zip(sample.image, sample.cells, sample.label):
        rows.append(np.concatenate([flat[img, cells[k]] for k in PERMUTATIONS[label]]))
    with torch.no_grad():
        logits = head(torch.tensor(np.stack(rows))).numpy()
    assert float(loss.detach()) == pytest.approx(_np_cross_entropy(logits, sample.label), rel=1e-6)
    assert float(acc) == pytest.approx(np.mean(logits.argmax(1) == sample.label))
