"""Shipping the default model (scripts/release.py): the improvement rule, bundling into a source tree,
the learning curve, the branch share, and one round of scripts/improve_default.py on a tiny model
(benchmark scores injected; scoring itself is eval's)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_generator

from spsr_cli.files import sha256_file
from spsr_cli.weights.store import read_weights_file, write_generator_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import release  # noqa: E402  (scripts/release.py: maintainer tooling, not installed)

TINY_TRAIN = [
    "model.nf=8",
    "model.nb=2",
    "model.gc=4",
    "data.hr_dirs=[]",
    "data.synthetic=4",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "loss.d_channels=4",
    "loss.perceptual_backbone=none",
    "train.threads=1",
    "train.steps=3",
    "train.d_warmup_steps=1",
    "train.checkpoint_every=3",
    "train.log_every=1",
]


def _scores(psnr: float, lpips: float) -> dict:
    return {
        "Set5": {"psnr": psnr + 3, "ssim": 0.8, "lpips": lpips / 2},
        "Set14": {"psnr": psnr, "ssim": 0.7, "lpips": lpips},
    }


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        (_scores(26.60, 0.140), _scores(26.60, 0.144), True),
        (_scores(26.51, 0.140), _scores(26.60, 0.144), True),  # PSNR drop 0.09 dB: allowed
        (_scores(26.49, 0.140), _scores(26.60, 0.144), False),  # 0.11 dB: refused
        (_scores(26.90, 0.144), _scores(26.60, 0.144), False),  # LPIPS equal: refused
        (_scores(26.00, 0.300), None, True),  # nothing recorded yet
    ],
)
def test_the_shipping_rule(candidate: dict, current: dict | None, expected: bool) -> None:
    decision, why = release.is_improvement(candidate, current)
    assert decision is expected
    assert ("Set14" in why) or current is None


def _tree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "spsr_cli").mkdir(parents=True)
    (repo / "weights_manifest.json").write_text(
        json.dumps({"format_version": 1, "default": None, "models": [], "auxiliary": []})
    )
    shutil.copyfile(REPO / "MODEL_CARD.md", repo / "MODEL_CARD.md")
    return repo


def _tiny_file(path: Path, seed: int = 0) -> Path:
    model = make_generator(seed)
    write_generator_file(path, model.state_dict(), model.config, source=f"test seed {seed}", licence="test")
    return path


def test_bundle_default_ships_the_file_entry_and_card(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    first = release.bundle_default(
        _tiny_file(tmp_path / "a.safetensors"),
        repo=repo,
        metrics=_scores(26.6, 0.1444),
        training={"steps": 0},
        licence="Apache-2.0",
        description="d",
    )
    shipped = repo / "spsr_cli" / first["source"]["path"]
    assert shipped == repo / "spsr_cli/weights/bundled/spsr-x4.safetensors"
    assert first["version"] == 1 and first["sha256"] == sha256_file(shipped) == sha256_file(tmp_path / "a.safetensors")
    manifest = json.loads((repo / "weights_manifest.json").read_text())
    assert manifest["default"] == "spsr-x4" and manifest["models"] == [first]
    card = (repo / "MODEL_CARD.md").read_text()
    assert "| **spsr-x4 v1** (this model) | 29.60 | 0.0722 | 26.60 | 0.1444 |" in card
    assert "value: 0.1444  # Set14 lpips" in card and "value: 26.6  # Set14 psnr" in card and "\nversion: 1\n" in card

    second = release.bundle_default(
        _tiny_file(tmp_path / "b.safetensors", seed=1),
        repo=repo,
        metrics=_scores(26.7, 0.14),
        training={"steps": 5},
        licence="Apache-2.0",
        description="d",
    )
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


def _ship_tiny_v1(tmp_path: Path, repo: Path) -> dict:
    """A tiny generator shipped as v1 of ``repo`` (Set14 26.6 dB / LPIPS 0.1444); its manifest entry."""
    return release.bundle_default(
        _tiny_file(tmp_path / "v1.safetensors"),
        repo=repo,
        metrics=_scores(26.6, 0.1444),
        training={"steps": 0},
        licence="Apache-2.0",
        description="d",
    )


def _script():
    spec = importlib.util.spec_from_file_location("improve_default", REPO / "scripts" / "improve_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("candidate", "validation_ok", "ships"),
    [
        (_scores(26.62, 0.1400), True, True),
        (_scores(26.40, 0.1300), True, False),  # Set14 PSNR too low
        (_scores(26.62, 0.1400), False, False),  # validation LPIPS did not improve
    ],
)
def test_one_improvement_round_continues_from_the_shipped_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate: dict, validation_ok: bool, ships: bool
) -> None:
    repo = _tree(tmp_path)
    v1 = _ship_tiny_v1(tmp_path, repo)
    scored: list[Path] = []

    def scorer(path: Path) -> dict:
        scored.append(path)
        return candidate

    monkeypatch.setattr(release, "validation_improves", lambda cand, base, **rule: (validation_ok, "injected"))
    run = tmp_path / "run"
    argv = ["--repo", str(repo), "--run", str(run), "--minutes", "30", "--reserve", "0", "--no-branch-share"]
    for item in TINY_TRAIN:
        argv += ["--set", item]
    assert _script().main([*argv, "--no-v1-baseline"], scorer=scorer) == 0
    for stage in ("w-warmup", "w-whole"):  # the whole network continues the warm-up, from the shipped model
        init = json.loads((run / stage / "init_report.json").read_text())
        assert init["kind"] == "spsr-generator" and init["source"].endswith("bundled/spsr-x4.safetensors")
    from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint

    assert latest_checkpoint(run / "w-warmup").name == "step_00000001.pt"  # train.d_warmup_steps
    state = load_checkpoint(latest_checkpoint(run / "w-whole"))
    assert state["step"] == 3 and state["config"]["train"]["checkpoint_every"] == 3  # its own cadence again
    assert len(scored) == 1 and read_weights_file(scored[0]).metadata["training_step"] == "3"
    entry = release.current_entry(repo, "spsr-x4")
    decision = json.loads((run / "decision.json").read_text())
    assert decision["ships"] is ships and decision["scores"] == candidate
    assert set(decision["training"]["stages"]) == {"w-warmup", "w-whole"}
    if ships:  # 1 warm-up step (discriminators only) + 2 generator steps of the whole network
        assert entry["version"] == 2 and entry["metrics"] == candidate and entry["training"]["steps"] == 2
        assert entry["training"]["reference_scores"]["spsr-x4 v1 (previous)"] == v1["metrics"]
        assert entry["sha256"] == sha256_file(scored[0])
    else:
        assert entry == v1
    shipped = read_weights_file(repo / "spsr_cli" / entry["source"]["path"])
    assert all(t.dtype == torch.float16 for t in shipped.state_dict.values())


def _validation_folder(folder: Path) -> Path:
    """Two random 32 px photographs: a tiny validation folder (``validation.hr_dir``)."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_trials_fork_the_warm_up_and_the_best_continues(tmp_path: Path) -> None:
    from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint

    repo = _tree(tmp_path)
    _ship_tiny_v1(tmp_path, repo)
    hr = _validation_folder(tmp_path / "val")
    run = tmp_path / "run"
    argv = ["--repo", str(repo), "--run", str(run), "--minutes", "30", "--reserve", "0", "--no-decide"]
    argv += ["--no-v1-baseline", "--trial", "slow=train.lr_parts.trunk=0.01", "--trial", "fast=train.lr=0.05"]
    argv += ["--trial-steps", "1"]
    for item in [*TINY_TRAIN, f"validation.hr_dir={hr}", "validation.lpips=false", "validation.every=1"]:
        argv += ["--set", item]
    assert _script().main(argv) == 0
    baselines = json.loads((run / "baselines.json").read_text())
    assert set(baselines) == {"shipped"} and baselines["shipped"]["crops"] == 2
    rows = {name: _script().validation_rows(run / f"w-trial-{name}") for name in ("slow", "fast")}
    assert [r["step"] for r in rows["slow"]] == [1, 2]  # the warm-up's row, copied, then its own
    assert rows["slow"][0] == rows["fast"][0] and rows["slow"][1] != rows["fast"][1]
    for name in ("slow", "fast"):
        groups = load_checkpoint(latest_checkpoint(run / f"w-trial-{name}"))["opt_g"]["param_groups"]
        trunk = next(g for g in groups if g["part"] == "trunk")
        assert trunk["lr"] == pytest.approx({"slow": 2e-5 * 0.01, "fast": 0.05 * 0.5}[name])  # the config's 0.5
    floor = baselines["shipped"]["psnr"] - 0.10
    best = max(rows, key=lambda n: (rows[n][1]["psnr"] >= floor, rows[n][1]["psnr"]))  # no LPIPS: PSNR decides
    whole = _script().validation_rows(run / "w-whole")
    assert whole[:2] == rows[best] and whole[-1]["step"] == 3


def test_validation_noise_is_the_largest_step_at_the_end_of_the_curve() -> None:
    noise = _script().validation_noise
    rows = [{"lpips": v} for v in (0.20, 0.16, 0.150, 0.152, 0.149, 0.150)]
    assert noise(rows, 4) == pytest.approx(0.003)
    assert noise(rows[:3], 4) is None


def test_the_card_says_how_the_version_was_made(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    release.bundle_default(
        _tiny_file(tmp_path / "a.safetensors"),
        repo=repo,
        metrics=_scores(26.6, 0.1444),
        training={"init": "realsr-df2k", "steps": 1200, "this_round": {"hardware": "2 CPU threads (AMX)"}},
        licence="Apache-2.0",
        description="d",
    )
    card = (repo / "MODEL_CARD.md").read_text()
    assert (
        "### Training of this version (v1)" in card
        and "- steps: 1200" in card
        and "hardware: 2 CPU threads (AMX)" in card
    )


def test_the_status_says_which_recipe_made_the_shipped_weights() -> None:
    share = {"mean_psnr": 46.4, "min_psnr": 42.3}
    staged = {"version": 2, "training": {"steps": 430, "this_round": {"branch_share_set14": share}}}
    assert "trunk frozen" in release.status_section(staged)
    whole = {"version": 3, "training": {"steps": 900, "this_round": {"lr_parts": {"trunk": 0.5}, "hardware": "h"}}}
    text = release.status_section(whole)
    assert "whole network (trunk included)" in text and "trunk 0.5" in text and "900 training steps" in text
    kept = {"version": 3, "training": {"steps": 1575, "this_round": {"init": "cand.safetensors", "lr_parts": None}}}
    text = release.status_section(kept)  # shipped as trained elsewhere: no rate of this round is claimed
    assert "cand.safetensors" in text and "factors" not in text and "trunk frozen" not in text


def test_validation_half_of_the_rule() -> None:
    shipped = {"psnr": 23.0, "lpips": 0.180}
    assert release.validation_improves({"psnr": 22.95, "lpips": 0.175}, shipped)[0] is True
    assert release.validation_improves({"psnr": 23.5, "lpips": 0.180}, shipped)[0] is False  # equal LPIPS
    assert release.validation_improves({"psnr": 23.5}, shipped)[0] is False  # no LPIPS: no decision to ship
    assert release.validation_improves(None, shipped)[0] is False
    rule = {"min_gain": 0.004, "max_psnr_drop": 0.10}
    assert release.validation_improves({"psnr": 22.91, "lpips": 0.175}, shipped, **rule)[0] is True
    ok, why = release.validation_improves({"psnr": 23.0, "lpips": 0.177}, shipped, **rule)  # inside the noise
    assert not ok and "noise" in why
    ok, why = release.validation_improves({"psnr": 22.89, "lpips": 0.170}, shipped, **rule)
    assert not ok and "PSNR" in why


def test_branch_share_is_infinite_when_the_fusion_ignores_the_branch_and_finite_when_it_uses_it(tmp_path: Path) -> None:
    from PIL import Image

    from spsr_cli.model.spsr import SPSRNet

    bench = tmp_path / "bench"
    (bench / "Set14" / "LR_bicubic_X4").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(bench / "Set14" / "LR_bicubic_X4" / "a.png")
    model = make_generator(0)
    with torch.no_grad():
        model.fusion.concat.weight[:, : model.config.nf].zero_()  # as in v1: the fusion reads the SR half only
        for rdb in (model.fusion.block.rdb1, model.fusion.block.rdb2, model.fusion.block.rdb3):
            rdb.conv5.weight.zero_()
            rdb.conv5.bias.zero_()
    path = tmp_path / "ignores.safetensors"
    write_generator_file(path, model.state_dict(), model.config, source="t", licence="t", dtype=torch.float32)
    share = release.branch_share(path, bench)
    assert share["images"] == 1 and math.isinf(share["mean_psnr"])
    used = make_generator(1)
    assert isinstance(used, SPSRNet)
    path = tmp_path / "uses.safetensors"
    write_generator_file(path, used.state_dict(), used.config, source="t", licence="t", dtype=torch.float32)
    share = release.branch_share(path, bench)
    assert math.isfinite(share["mean_psnr"]) and share["min_psnr"] <= share["mean_psnr"]


def test_the_learning_curve_grows_without_repeating_rows(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    card = repo / "MODEL_CARD.md"
    card.write_text(card.read_text() + "\n<!-- curve:start -->\n<!-- curve:end -->\n")
    row = {
        "round": "r1",
        "stage": "a-branch",
        "step": 10,
        "total_steps": 10,
        "psnr": 23.0,
        "ssim": 0.6,
        "lpips": 0.18,
        "branch_l1": 0.07,
        "bicubic_branch_l1": 0.08,
    }
    release.update_curve(repo, [row])
    curve = release.update_curve(repo, [row, {**row, "stage": "b-fusion", "total_steps": 20}])
    assert len(curve) == 2 and len((repo / "training_curve.jsonl").read_text().splitlines()) == 2
    text = card.read_text()
    assert "| r1 | a-branch | 10 | 10 | 23.000 | 0.6000 | 0.1800 | 0.0700 (0.0800) |" in text
    assert "| r1 | b-fusion | 10 | 20 |" in text


def _v1_like(seed: int):
    """A tiny generator whose fusion ignores the gradient branch, as spsr-x4 v1's does."""
    model = make_generator(seed)
    with torch.no_grad():
        model.fusion.concat.weight[:, : model.config.nf].zero_()
        for rdb in (model.fusion.block.rdb1, model.fusion.block.rdb2, model.fusion.block.rdb3):
            rdb.conv5.weight.zero_()
            rdb.conv5.bias.zero_()
    return model


def test_interpolation_blends_every_part_but_the_branch() -> None:
    from spsr_cli.errors import UsageError
    from spsr_cli.model.spsr import part_of

    base, tuned = make_generator(0).state_dict(), make_generator(1).state_dict()
    for alpha in (0.0, 0.3, 1.0):
        blend = release.interpolate_generator(base, tuned, alpha)
        assert blend.keys() == tuned.keys()
        for key, value in blend.items():
            if part_of(key) == "branch" or not tuned[key].is_floating_point():
                assert torch.equal(value, tuned[key].float())
            else:
                assert torch.allclose(value, (1 - alpha) * base[key] + alpha * tuned[key], atol=1e-6), key
    assert any(not torch.equal(base[k], tuned[k]) for k in base if part_of(k) == "fusion")
    with pytest.raises(UsageError, match="outside"):
        release.interpolate_generator(base, tuned, 1.5)
    with pytest.raises(UsageError, match="keys"):
        release.interpolate_generator(base, {k: v for k, v in tuned.items() if not k.startswith("fusion.")}, 0.5)


def test_alpha_zero_gives_the_shipped_output_and_one_the_trained() -> None:
    from spsr_cli.weights.layouts import build_generator

    base, tuned = _v1_like(0), make_generator(1)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want_base, want_tuned = base(x).sr, tuned(x).sr
        for alpha, want in ((0.0, want_base), (1.0, want_tuned)):
            model = build_generator(
                release.interpolate_generator(base.state_dict(), tuned.state_dict(), alpha), base.config
            )
            assert torch.allclose(model.eval()(x).sr, want, atol=1e-5)
        half = build_generator(release.interpolate_generator(base.state_dict(), tuned.state_dict(), 0.5), base.config)
        out = half.eval()(x).sr
    assert not torch.allclose(out, want_base, atol=1e-3) and not torch.allclose(out, want_tuned, atol=1e-3)


def test_choose_alpha_takes_the_lowest_lpips_at_the_psnr_floor() -> None:
    rows = [
        {"alpha": 0.25, "psnr": 24.10, "lpips": 0.155},
        {"alpha": 0.5, "psnr": 24.02, "lpips": 0.152},
        {"alpha": 1.0, "psnr": 23.80, "lpips": 0.149},  # lowest LPIPS, under the floor
    ]
    assert release.choose_alpha(rows, 24.0)["alpha"] == 0.5
    assert release.choose_alpha(rows, 23.0)["alpha"] == 1.0
    assert release.choose_alpha(rows, 24.5) is None
    assert release.choose_alpha([{"alpha": 1.0, "psnr": 30.0}], 0.0) is None  # no LPIPS: nothing to choose by


def test_a_round_with_interpolation_scores_each_blend_on_validation(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    _ship_tiny_v1(tmp_path, repo)
    hr = _validation_folder(tmp_path / "val")
    run = tmp_path / "run"
    argv = ["--repo", str(repo), "--run", str(run), "--minutes", "30", "--reserve", "0", "--no-branch-share"]
    argv += ["--alphas", "0,0.5,1", "--no-v1-baseline"]
    for item in [*TINY_TRAIN, f"validation.hr_dir={hr}", "validation.lpips=false", "validation.every=3"]:
        argv += ["--set", item]
    assert _script().main(argv, scorer=lambda path: _scores(26.0, 0.2)) == 0
    decision = json.loads((run / "decision.json").read_text())
    sweep = decision["training"]["interpolation"]
    assert [r["alpha"] for r in sweep["rows"]] == [0.0, 0.5, 1.0]
    assert len({r["psnr"] for r in sweep["rows"]}) == 3  # each blend really scored
    assert sweep["chosen"]["alpha"] == 0.0  # no LPIPS: the blend closest to the shipped model
    candidate = read_weights_file(Path(decision["candidate"]))
    assert "alpha 0" in candidate.metadata["source"] and Path(decision["candidate"]).name.endswith(
        "-alpha0.safetensors"
    )


def test_alphas_are_checked() -> None:
    script = _script()
    assert script.parse_args(["--alphas", "0.25,1"]).alphas == (0.25, 1.0)
    for bad in ("2", "a,b"):
        with pytest.raises(SystemExit):
            script.parse_args(["--alphas", bad])


def test_a_run_started_again_on_a_new_machine_continues_the_total_steps(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    scores = {"ssim": 0.65, "lpips": 0.156, "branch_l1": 0.06, "bicubic_branch_l1": 0.075}
    earlier = {
        "round": "spsr-x4 v1 -> v2",
        "stage": "b-fusion",
        "step": 601,
        "total_steps": 1301,
        "psnr": 23.7,
        **scores,
    }
    (repo / release.CURVE_FILE).write_text(json.dumps(earlier) + "\n")
    run = tmp_path / "run"
    start = {"event": "start", "time": 1796316786.0, "step": 0}

    def row(step: int, psnr: float, time: float) -> dict:
        return {"event": "validation", "time": time, "step": step, "psnr": psnr, **scores}

    warm_up = [start, row(100, 24.1, 1.0)]
    trial_won = [*warm_up, row(300, 24.0, 2.0)]
    logs = {
        "w-warmup": warm_up,
        "w-trial-won": trial_won,
        "w-trial-lost": [*warm_up, row(300, 23.8, 3.0)],
        "w-whole": [*trial_won, row(500, 24.05, 4.0)],
    }
    for stage, lines in logs.items():
        (run / stage).mkdir(parents=True)
        (run / stage / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = _script().curve_rows(repo, {"name": "spsr-x4", "version": 1}, run)
    # the path taken (warm-up, winning trial, continuation) once, and the losing trial's own row
    assert [(r["stage"], r["total_steps"]) for r in rows] == [
        ("w-whole", 1401),
        ("w-whole", 1601),
        ("w-whole", 1801),
        ("w-trial-lost", 1601),
    ]
    assert {r["round"] for r in rows} == {"spsr-x4 v1 -> v2, run of 2026-12-03 16:53"}
    curve = release.update_curve(repo, rows)
    assert len(curve) == 5  # the earlier run's row at another step is kept, none is dropped as a repeat


def test_a_new_version_keeps_the_measured_speed_and_its_place(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    _ship_tiny_v1(tmp_path, repo)
    manifest = json.loads((repo / "weights_manifest.json").read_text())
    manifest["models"][0]["seconds_per_megapixel"] = {"cpu (fp32)": 62.9}
    manifest["models"].append({**manifest["models"][0], "name": "other"})
    (repo / "weights_manifest.json").write_text(json.dumps(manifest))
    release.bundle_default(
        _tiny_file(tmp_path / "v2.safetensors", seed=1),
        repo=repo,
        metrics=_scores(26.6, 0.1400),
        training={"steps": 3},
        licence="Apache-2.0",
        description="d",
    )
    models = json.loads((repo / "weights_manifest.json").read_text())["models"]
    assert [m["name"] for m in models] == ["spsr-x4", "other"]
    assert models[0]["version"] == 2 and models[0]["seconds_per_megapixel"] == {"cpu (fp32)": 62.9}
