"""`spsr eval` on the command line: messages, exit codes and output files (the work: tests/test_eval_runner.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spsr_cli.cli.app import run


def _hr_set(folder: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_image_names_are_never_read_as_markup(tmp_path, capsys):
    """Issue 26, defect 1 in eval: a failed image in ``hr[`` named ``b]bad.png`` printed its row as rich markup."""
    hr = _hr_set(tmp_path / "hr[", names=("ok", "good :thumbs_up:", "[bold]fine"))
    (hr / "b]bad.png").write_bytes(b"not a png")
    assert run(["eval", "--hr-dir", str(hr), "--model", "bicubic", "--no-lpips", "--no-niqe"]) == 1
    captured = capsys.readouterr()
    assert "hr[/b]bad.png" in captured.err and "good :thumbs_up:" in captured.out and "[bold]fine" in captured.out


def test_output_paths_are_checked_before_any_scoring(tmp_path, capsys, monkeypatch):
    """Issue 26, defect 4: ``--json /proc/nope/x.json`` (or an existing folder, or --csv/--save-images
    there) gave a traceback after all the scoring was done."""
    from spsr_cli.eval import runner

    hr = _hr_set(tmp_path / "hr")
    scored = []
    real = runner.score_pair
    monkeypatch.setattr(runner, "score_pair", lambda *a, **k: scored.append(1) or real(*a, **k))
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    base = ["eval", "--hr-dir", str(hr), "--model", "bicubic", "--no-lpips", "--no-niqe"]
    for extra, words in (
        (["--json", "/proc/nope/x.json"], "--json /proc/nope/x.json: cannot write into /proc"),
        (["--json", str(tmp_path / "folder")], "is a folder"),
        (["--csv", "/proc/nope/x.csv"], "--csv /proc/nope/x.csv: cannot write into /proc"),
        (["--csv", str(tmp_path / "folder")], "is a folder"),
        (["--save-images", "/proc/nope/s"], "--save-images /proc/nope/s: cannot write into /proc"),
        (["--save-images", str(tmp_path / "file")], "is not a folder"),
        (["--json", str(tmp_path / "r"), "--csv", str(tmp_path / "r")], "give two files"),
    ):
        assert run([*base, *extra]) == 2, extra
        assert words in " ".join(capsys.readouterr().err.split())
    assert scored == []


def test_a_read_only_folder_is_refused_before_scoring(tmp_path, capsys, monkeypatch):
    """Defect 4 for a read-only folder (root may write anywhere, so the refusal is simulated)."""
    import errno
    import tempfile

    hr = _hr_set(tmp_path / "hr")
    (tmp_path / "ro").mkdir()
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    args = ["eval", "--hr-dir", str(hr), "--model", "bicubic", "--no-lpips", "--no-niqe"]
    assert run([*args, "--json", str(tmp_path / "ro/x.json")]) == 2
    assert "Permission denied" in capsys.readouterr().err
    assert run([*args, "--save-images", str(tmp_path / "ro/s")]) == 2


def test_one_model_and_compare_tables_share_their_column_order(tmp_path, capsys):
    """Issue 26 (low): the single-model and --compare tables ordered their columns differently."""
    hr = _hr_set(tmp_path / "hr")
    base = ["eval", "--hr-dir", str(hr), "--no-lpips", "--no-niqe"]
    assert run([*base, "--model", "bicubic"]) == 0
    single = next(x for x in capsys.readouterr().out.splitlines() if "PSNR" in x)
    assert run([*base, "--compare", "bicubic", "bicubic"]) == 0
    several = next(x for x in capsys.readouterr().out.splitlines() if "PSNR" in x)
    order = ("LPIPS", "PSNR", "SSIM", "NIQE")
    assert [single.index(m) for m in order] == sorted(single.index(m) for m in order)
    assert [several.index(m) for m in order] == sorted(several.index(m) for m in order)


def test_a_json_record_describes_each_model_and_times_it_alone(tmp_path, tiny_weights):
    """Issue 26: `spsr eval --json` had no model sha256, version, precision, device or backend, and its
    "seconds" repeated the whole run's time for every model, bicubic included."""
    import hashlib
    import json

    hr = _hr_set(tmp_path / "hr")
    record = tmp_path / "r.json"
    args = ["eval", "--hr-dir", str(hr), "--no-lpips", "--no-niqe", "--json", str(record), "--device", "cpu"]
    assert run([*args, "--compare", "bicubic", str(tiny_weights)]) == 0
    bicubic, tiny = json.loads(record.read_text())["results"]
    details = tiny["model_details"]
    assert details["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert (details["architecture"], details["config"]["nf"], details["version"]) == ("spsr", 8, None)
    assert (details["device"], details["precision"], details["backend"]) == ("cpu", "fp32", "torch")
    assert tiny["timing"]["load_seconds"] > 0 and tiny["timing"]["warm_up_seconds"] > 0
    assert bicubic["model_details"]["name"] == "bicubic" and bicubic["timing"]["warm_up_seconds"] is None
    for result in (bicubic, tiny):
        per_image = [r["seconds"] for r in result["images"]]
        assert all(s > 0 for s in per_image) and result["seconds"] == pytest.approx(sum(per_image), abs=2e-4)
        assert result["timing"]["output_megapixels"] == round(2 * 48 * 48 / 1e6, 4)
        assert result["run_seconds"] >= result["seconds"] and result["versions"]["torch"]
    assert bicubic["seconds"] != tiny["seconds"]
