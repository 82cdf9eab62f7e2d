"""``spsr train``: print-config, run, resume, export, fetch-init, and clear usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spsr_cli import load_generator
from spsr_cli.cli.app import run
from spsr_cli.train.checkpoint import list_checkpoints

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


FAST = [
    "--set",
    "data.batch_size=2",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "logging.progress=false",
    "--set",
    "train.fusion_only_steps=1",
]


def test_print_config_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["loss"]["pixel"] == 0.01 and cfg["train"]["lr"] == 1e-4 and cfg["data"]["crop_size"] == 128


def test_print_config_applies_file_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            "train",
            "--print-config",
            "--config",
            str(CONFIGS / "tiny-cpu.yaml"),
            "--set",
            "train.lr=5e-4",
            "--stage",
            "psnr",
        ]
    )
    assert code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["nf"] == 8 and cfg["train"]["lr"] == 5e-4 and cfg["train"]["stage"] == "psnr"


def test_train_resume_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    tiny = str(CONFIGS / "tiny-cpu.yaml")
    assert run(["train", "--config", tiny, "--out", str(out), "--set", "train.steps=2", *FAST]) == 0
    assert [s for s, _ in list_checkpoints(out)] == [2]
    assert (out / "config.yaml").is_file() and (out / "log.jsonl").is_file()
    # a second fresh run into the same folder is refused; --resume (no --config needed) continues
    assert run(["train", "--config", tiny, "--out", str(out), *FAST]) == 2
    assert "--resume" in _err(capsys)
    assert run(["train", "--out", str(out), "--resume", "--set", "train.steps=4"]) == 0
    assert [s for s, _ in list_checkpoints(out)][-1] == 4
    _err(capsys)
    assert run(["train", "--out", str(out), "--resume", "--set", "train.steps=4"]) == 0  # already finished
    said = _err(capsys)
    assert "already finished" in said and "step_00000004.pt" in said and "none written" not in said
    assert run(["train", "export", str(out), "--name", "cli-tiny"]) == 0
    assert "cli-tiny" in _err(capsys)
    assert load_generator("cli-tiny").config.nf == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.nosuch=1"], "train.nosuch"),
        (["--stage", "warmup"], "train.stage"),
        ([], "--config"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    config = [] if not args else ["--config", str(CONFIGS / "tiny-cpu.yaml")]
    assert run(["train", *config, "--out", str(tmp_path / "r"), *args]) == 2
    assert message in _err(capsys)
    assert not (tmp_path / "r").exists()


def test_missing_out_and_missing_data_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--config", str(CONFIGS / "tiny-cpu.yaml")]) == 2
    assert "--out" in _err(capsys)
    code = run(
        [
            "train",
            "--config",
            str(CONFIGS / "tiny-cpu.yaml"),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "data.synthetic=0",
            "--set",
            f"data.hr_dirs=[{tmp_path / 'nothing'}]",
        ]
    )
    assert code == 2 and "does not exist" in _err(capsys)


def test_export_of_a_folder_without_checkpoints_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["train", "export", str(tmp_path), "--name", "x"]) == 1
    assert "no checkpoint" in _err(capsys)


def test_fetch_init_offline_without_cache_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "fetch-init", "--offline"]) == 1
    assert "error" in _err(capsys).lower()


def _rrdb_file(path: Path, scale: float) -> Path:
    """A BasicSR-layout RRDBNet (nf 8, nb 2, gc 4) with weights ~ N(0, scale)."""
    import torch
    from safetensors.torch import save_file

    nf, nb, gc = 8, 2, 4
    shapes = {
        "conv_first": (nf, 3),
        "conv_body": (nf, nf),
        "conv_up1": (nf, nf),
        "conv_up2": (nf, nf),
        "conv_hr": (nf, nf),
        "conv_last": (3, nf),
    }
    for i in range(nb):
        for k in (1, 2, 3):
            for j in range(1, 6):
                shapes[f"body.{i}.rdb{k}.conv{j}"] = (gc if j < 5 else nf, nf + (j - 1) * gc)
    sd = {}
    for name, (o, i) in shapes.items():
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.randn(o, i, 3, 3) * scale, torch.zeros(o)
    save_file(sd, str(path))
    return path


def test_init_from_an_rrdb_file_is_reported(tmp_path: Path) -> None:
    import json

    rrdb = _rrdb_file(tmp_path / "rrdb.safetensors", 0.05)
    out = tmp_path / "run"
    code = run(
        [
            "train",
            "--config",
            str(CONFIGS / "tiny-cpu.yaml"),
            "--out",
            str(out),
            "--init",
            str(rrdb),
            "--set",
            "train.steps=1",
            *FAST,
        ]
    )
    assert code == 0
    report = json.loads((out / "init_report.json").read_text())
    assert report["kind"] == "rrdb-warm-start" and "fusion.out.weight" in report["loaded"]
    assert any(k.startswith("branch.") for k in report["random"])
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["init"].endswith("rrdb.safetensors")


def test_divergence_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rrdb = _rrdb_file(tmp_path / "huge.safetensors", 1.0)  # activations explode at once
    code = run(
        [
            "train",
            "--config",
            str(CONFIGS / "tiny-cpu.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--init",
            str(rrdb),
            "--set",
            "train.steps=2",
            "--set",
            "train.log_every=1",
            *FAST,
        ]
    )
    assert code == 1 and "non-finite loss at step 1" in _err(capsys)


def test_train_nse_export_and_spsr_p_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nse_run, tiny_nse = tmp_path / "nse", str(CONFIGS / "nse-tiny.yaml")
    assert run(["train", "nse", "--method", "jigsaw", "--config", tiny_nse]) == 2
    assert "--out" in _err(capsys)
    assert run(["train", "nse", "--method", "mosaic", "--config", tiny_nse, "--out", str(nse_run)]) == 2
    assert "task.method" in _err(capsys)
    assert (
        run(
            [
                "train",
                "nse",
                "--method",
                "jigsaw",
                "--config",
                tiny_nse,
                "--out",
                str(nse_run),
                "--set",
                "train.steps=4",
            ]
        )
        == 0
    )
    assert "trained jigsaw NSE to step 4" in _err(capsys)
    assert run(["train", "nse", "--out", str(nse_run), "--resume", "--set", "train.steps=6"]) == 0
    assert [s for s, _ in list_checkpoints(nse_run)][-1] == 6
    assert run(["train", "export", str(nse_run), "--name", "cli-nse"]) == 0
    assert "structure extractor cli-nse (step 6)" in _err(capsys)
    out = tmp_path / "sr"
    code = run(
        [
            "train",
            "--config",
            str(CONFIGS / "tiny-cpu.yaml"),
            "--out",
            str(out),
            *FAST,
            "--set",
            "train.steps=2",
            "--set",
            "loss.preset=spsr-j",
            "--set",
            "loss.nse=cli-nse",
        ]
    )
    assert code == 0 and [s for s, _ in list_checkpoints(out)] == [2]
    assert '"preset": "spsr-j", "nse": "cli-nse"' in (out / "log.jsonl").read_text()


def test_out_naming_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 26, defect 8: ``spsr train --out good.png`` (an existing file) gave a FileExistsError traceback."""
    (tmp_path / "good.png").write_bytes(b"a photo")
    for command in (["train", "--config", str(CONFIGS / "tiny-cpu.yaml")], ["train", "nse"]):
        assert run([*command, "--out", str(tmp_path / "good.png")]) == 2
        assert "--out" in _err(capsys)
        assert (tmp_path / "good.png").read_bytes() == b"a photo"
    assert run(["train", "--config", str(CONFIGS / "tiny-cpu.yaml"), "--out", "/proc/nope/run"]) == 2
    assert "cannot write into /proc" in _err(capsys)


def test_a_shipped_config_is_named_without_a_checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 26: training configs were not in the wheel, so the README's commands needed a checkout."""
    from spsr_cli.train.shipped import shipped_configs

    assert {"spsr-x4", "spsr-x4-cpu", "tiny-cpu", "nse-contrastive"} <= set(shipped_configs())
    for name in ("spsr-x4-cpu", "spsr-x4-cpu.yaml", str(CONFIGS / "spsr-x4-cpu.yaml")):
        assert run(["train", "--config", name, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["train"]["trainable"] == "branch+fusion"
    assert run(["train", "--config", "no-such-recipe", "--print-config"]) == 2
    assert "shipped: " in _err(capsys)


def test_the_wheel_carries_the_configs() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]["configs"] == "spsr_cli/configs"
