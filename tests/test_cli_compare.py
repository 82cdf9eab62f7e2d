"""`spsr compare` on the command line: options, exit codes, messages (the work: tests/test_eval_compare.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spsr_cli.cli.app import run


def test_cli_compare(tmp_path: Path, tiny_weights: Path, capsys, one_thread) -> None:
    photos = [tmp_path / "a.jpg"]
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(photos[0])
    args = [
        "compare",
        str(photos[0]),
        "-m",
        "bicubic",
        "-m",
        str(tiny_weights),
        "-o",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--offline",
    ]
    assert run(args) == 0
    err = capsys.readouterr().err
    assert "a: bicubic" in err and "index.html" in err
    assert run(args) == 2 and "--force" in capsys.readouterr().err
    assert run([*args, "--force", "--crop", "1,1,12"]) == 0
    assert run(["compare", str(photos[0]), "-o", str(tmp_path / "x")]) == 2
    assert run(["compare", str(photos[0]), "-m", "bicubic"]) == 2
    assert run(["compare", str(photos[0]), "-m", "bicubic", "-o", str(tmp_path / "y"), "--crop", "1,2"]) == 2
    assert run(["compare", str(photos[0]), "-m", "no-such-model", "-o", str(tmp_path / "z")]) == 2


def test_cli_compare_exit_1_when_a_photo_fails(tmp_path: Path, capsys) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(good)
    bad.write_bytes(b"not an image")
    assert run(["compare", str(good), str(bad), "-m", "bicubic", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "bad.png" in err and "1 photo compared" in err and "1 failed" in err


def test_cli_compare_takes_a_video_frame_at_a_time(tmp_path: Path, capsys, one_thread) -> None:
    pytest.importorskip("av")
    from videoclips import make_clip

    clip = make_clip(tmp_path / "clip.mp4", rotation=90)
    args = ["compare", str(clip), "-m", "bicubic", "-o", str(tmp_path / "out"), "--offline"]
    assert run([*args, "--at", "1.5"]) == 0
    assert Image.open(tmp_path / "out/full/clip/input.png").size == (48, 64)  # as shown: turned a quarter
    assert Image.open(tmp_path / "out/full/clip/bicubic.png").size == (192, 256)
    assert run([*args, "--force", "--at", "9"]) == 1
    assert "lasts 2.00 s" in " ".join(capsys.readouterr().err.split())


def test_cli_compare_never_reads_photo_names_as_markup(tmp_path: Path, capsys) -> None:
    """Issue 26, defect 1 in compare."""
    (tmp_path / "p[").mkdir()
    good, bad = tmp_path / "p[" / "i]ok.png", tmp_path / "p[" / "b]bad.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(good)
    bad.write_bytes(b"not an image")
    assert run(["compare", str(good), str(bad), "-m", "bicubic", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "p[/b]bad.png" in err and "i_ok: bicubic" in err


def test_cli_compare_records_each_model_and_times_without_warm_up(tmp_path: Path, tiny_weights: Path) -> None:
    """Issue 26: compare reported warm-up as speed (28.35 s on the first photo, 5.37 s on the second)."""
    import hashlib
    import json

    photo = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    assert (
        run(["compare", str(photo), "-m", "bicubic", "-m", str(tiny_weights), "-o", str(out), "--device", "cpu"]) == 0
    )
    doc = json.loads((out / "compare.json").read_text())
    bicubic, tiny = doc["models"]
    assert tiny["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest() and tiny["architecture"] == "spsr"
    assert tiny["warm_up_seconds"] > 0 and tiny["load_seconds"] > 0 and tiny["backend"] == "torch"
    assert bicubic["name"] == "bicubic"
    output = doc["photos"][0]["outputs"][1]
    assert output["seconds_per_output_megapixel"] == pytest.approx(output["seconds"] / (80 * 96 / 1e6), rel=0.01)
    assert "s per output MP" in (out / "index.html").read_text()
