"""Shipping the default model: the improvement rule, bundling into a source tree, and one
round of scripts/improve_default.py on a tiny model (scores injected; scoring itself is eval's)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import make_generator
from spsr_cli.train import release
from spsr_cli.weights.hub import sha256_file
from spsr_cli.weights.store import read_weights_file, write_generator_file

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "model.nf=8", "model.nb=2", "model.gc=4", "data.hr_dirs=[]", "data.synthetic=4", "data.crop_size=32",
    "data.batch_size=2", "data.num_workers=0", "loss.d_channels=4", "loss.perceptual_backbone=none",
    "train.threads=1", "train.steps=3", "train.d_warmup_steps=1", "train.checkpoint_every=3", "train.log_every=1",
]


def _scores(psnr: float, lpips: float) -> dict:
    return {"Set5": {"psnr": psnr + 3, "ssim": 0.8, "lpips": lpips / 2}, "Set14": {"psnr": psnr, "ssim": 0.7, "lpips": lpips}}


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        (_scores(26.60, 0.140), _scores(26.60, 0.144), True),
        (_scores(26.56, 0.140), _scores(26.60, 0.144), True),    # PSNR drop 0.04 dB: allowed
        (_scores(26.54, 0.140), _scores(26.60, 0.144), False),   # 0.06 dB: refused
        (_scores(26.90, 0.144), _scores(26.60, 0.144), False),   # LPIPS equal: refused
        (_scores(26.00, 0.300), None, True),                     # nothing recorded yet
    ],
)
def test_the_shipping_rule(candidate: dict, current: dict | None, expected: bool) -> None:
    decision, why = release.is_improvement(candidate, current)
    assert decision is expected
    assert ("Set14" in why) or current is None


def _tree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "spsr_cli").mkdir(parents=True)
    (repo / "weights_manifest.json").write_text(json.dumps({"format_version": 1, "default": None, "models": [], "auxiliary": []}))
    shutil.copyfile(REPO / "MODEL_CARD.md", repo / "MODEL_CARD.md")
    return repo


def _tiny_file(path: Path, seed: int = 0) -> Path:
    model = make_generator(seed)
    write_generator_file(path, model.state_dict(), model.config, source=f"test seed {seed}", licence="test")
    return path


def test_bundle_default_ships_the_file_entry_and_card(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    first = release.bundle_default(_tiny_file(tmp_path / "a.safetensors"), repo=repo, metrics=_scores(26.6, 0.1444),
                                   training={"steps": 0}, licence="Apache-2.0", description="d")
    shipped = repo / "spsr_cli" / first["source"]["path"]
    assert shipped == repo / "spsr_cli/weights/bundled/spsr-x4.safetensors"
    assert first["version"] == 1 and first["sha256"] == sha256_file(shipped) == sha256_file(tmp_path / "a.safetensors")
    manifest = json.loads((repo / "weights_manifest.json").read_text())
    assert manifest["default"] == "spsr-x4" and manifest["models"] == [first]
    card = (repo / "MODEL_CARD.md").read_text()
    assert "| **spsr-x4 v1** (this model) | 29.60 | 0.0722 | 26.60 | 0.1444 |" in card
    assert "value: 0.1444  # Set14 lpips" in card and "value: 26.6  # Set14 psnr" in card and "\nversion: 1\n" in card

    second = release.bundle_default(_tiny_file(tmp_path / "b.safetensors", seed=1), repo=repo, metrics=_scores(26.7, 0.14),
                                    training={"steps": 5}, licence="Apache-2.0", description="d")
    assert second["version"] == 2 and second["sha256"] == sha256_file(shipped) != first["sha256"]
    assert len(json.loads((repo / "weights_manifest.json").read_text())["models"]) == 1
    assert "| **spsr-x4 v2** (this model) | 29.70 | 0.0700 | 26.70 | 0.1400 |" in (repo / "MODEL_CARD.md").read_text()


def test_bundle_refuses_a_broken_file_and_changes_nothing(tmp_path: Path) -> None:
    from spsr_cli.errors import SPSRError

    repo = _tree(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    before = (repo / "weights_manifest.json").read_text()
    with pytest.raises(SPSRError):
        release.bundle_default(bad, repo=repo, metrics={}, training={}, licence="x", description="d")
    assert (repo / "weights_manifest.json").read_text() == before
    assert not (repo / "spsr_cli" / "weights").exists()


def _script():
    spec = importlib.util.spec_from_file_location("improve_default", REPO / "scripts" / "improve_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("candidate", "ships"), [(_scores(26.62, 0.1400), True), (_scores(26.40, 0.1300), False)])
def test_one_improvement_round_continues_from_the_shipped_model(tmp_path: Path, candidate: dict, ships: bool) -> None:
    repo = _tree(tmp_path)
    v1 = release.bundle_default(_tiny_file(tmp_path / "v1.safetensors"), repo=repo, metrics=_scores(26.6, 0.1444),
                                training={"steps": 0}, licence="Apache-2.0", description="d")
    scored: list[Path] = []

    def scorer(path: Path) -> dict:
        scored.append(path)
        return candidate

    run = tmp_path / "run"
    argv = ["--repo", str(repo), "--run", str(run), "--minutes", "30", "--reserve", "0"]
    for item in TINY_TRAIN:
        argv += ["--set", item]
    assert _script().main(argv, scorer=scorer) == 0
    init = json.loads((run / "a-branch" / "init_report.json").read_text())  # stage A from the shipped model
    assert init["kind"] == "spsr-generator" and init["source"].endswith("bundled/spsr-x4.safetensors")
    init = json.loads((run / "b-fusion" / "init_report.json").read_text())  # stage B from stage A
    assert init["kind"] == "training-checkpoint" and "a-branch" in init["source"]
    assert len(scored) == 1 and read_weights_file(scored[0]).metadata["training_step"] == "3"
    entry = release.current_entry(repo, "spsr-x4")
    if ships:
        assert entry["version"] == 2 and entry["metrics"] == candidate and entry["training"]["steps"] == 3
        assert entry["training"]["reference_scores"]["spsr-x4 v1 (previous)"] == v1["metrics"]
        assert entry["sha256"] == sha256_file(scored[0])
    else:
        assert entry == v1
    shipped = read_weights_file(repo / "spsr_cli" / entry["source"]["path"])
    assert all(t.dtype == torch.float16 for t in shipped.state_dict.values())


def test_the_card_says_how_the_version_was_made(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    release.bundle_default(_tiny_file(tmp_path / "a.safetensors"), repo=repo, metrics=_scores(26.6, 0.1444),
                           training={"init": "realsr-df2k", "steps": 1200, "this_round": {"hardware": "2 CPU threads (AMX)"}},
                           licence="Apache-2.0", description="d")
    card = (repo / "MODEL_CARD.md").read_text()
    assert "### Training of this version (v1)" in card and "- steps: 1200" in card and "hardware: 2 CPU threads (AMX)" in card
