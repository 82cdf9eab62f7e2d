"""NSE training: InfoNCE and jigsaw losses vs numpy, sampling rules, a tiny run that resumes and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spsr_cli.errors import UnknownModelError
from spsr_cli.model.nse import CONTEXT_OFFSETS, JigsawHead
from spsr_cli.train.checkpoint import list_checkpoints
from spsr_cli.train.config import ConfigError
from spsr_cli.train.export import export_run
from spsr_cli.train.nse import (
    PERMUTATIONS,
    JigsawSample,
    info_nce,
    jigsaw_inputs,
    jigsaw_loss,
    load_nse_config,
    sample_contrastive,
    sample_jigsaw,
    train_nse,
)
from spsr_cli.weights.nse_files import load_nse

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
    s = sample_contrastive(np.random.default_rng(1), batch=3, height=h, width=w, offsets=CONTEXT_OFFSETS[variant],
                           anchors=40, negatives=12, min_distance=8)
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


def test_too_small_a_map_for_the_negatives_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-overlapping negative"):
        load_nse_config(CONFIGS / "nse-tiny.yaml", ["data.crop_size=64"])
    with pytest.raises(ValueError, match="non-overlapping negatives"):
        sample_contrastive(np.random.default_rng(0), batch=1, height=16, width=16, offsets=CONTEXT_OFFSETS["cross"],
                           anchors=100, negatives=4, min_distance=8)


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


@pytest.mark.parametrize("method", ["contrastive", "jigsaw"])
def test_tiny_run_trains_resumes_exactly_and_exports(tmp_path: Path, method: str) -> None:
    cfg = load_nse_config(CONFIGS / "nse-tiny.yaml", [f"task.method={method}", "train.steps=8",
                                                      "train.checkpoint_every=4", "train.eval_every=8"])
    full = train_nse(cfg, tmp_path / "full")
    assert full.step == 8 and len(full.history) == 3 and full.evaluation[-1]["step"] == 8
    assert 0.0 <= full.evaluation[-1]["accuracy"] <= 1.0 and full.train_seconds > 0
    split = json.loads((tmp_path / "full" / "split.json").read_text())
    assert split["held_out"] and not set(split["held_out"]) & set(split["train"])

    train_nse(cfg, tmp_path / "cut", stop_after=4)
    with pytest.raises(Exception, match="--resume"):
        train_nse(cfg, tmp_path / "cut")
    resumed = train_nse(cfg, tmp_path / "cut", resume=True)
    assert resumed.step == 8 and resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-6)
    state_full = torch.load(list_checkpoints(tmp_path / "full")[-1][1], weights_only=True)
    state_cut = torch.load(list_checkpoints(tmp_path / "cut")[-1][1], weights_only=True)
    for key, value in state_full["model"].items():
        torch.testing.assert_close(state_cut["model"][key], value, rtol=0, atol=0)

    result = export_run(tmp_path / "full", name=f"tiny-{method}")
    assert result.weights == "nse" and result.path.suffix == ".safetensors"
    nse, meta = load_nse(f"tiny-{method}")
    assert meta["method"] == method and json.loads(meta["evaluation"])["step"] == 8
    for key, value in nse.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, state_full["model"][key])
    with pytest.raises(UnknownModelError, match="exists already"):
        export_run(tmp_path / "full", name=f"tiny-{method}")


def test_shipped_nse_configs_parse() -> None:
    p, j = (load_nse_config(CONFIGS / f"nse-{m}.yaml") for m in ("contrastive", "jigsaw"))
    assert (p.task.method, j.task.method) == ("contrastive", "jigsaw")
    assert p.task.temperature == 64.0 and p.train.lr == 1e-3 and p.train.gamma == 0.2
    assert p.model == j.model and p.data == j.data and p.train == j.train
    assert not any("bench" in d or "Set" in d for d in p.data.hr_dirs)  # never a benchmark image
