"""The README's table of exit codes, row by row: 0 success, 1 failed inputs or a runtime error,
2 usage errors (nothing computed)."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from spsr_cli.cli.app import run

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def world(tmp_path, tiny_weights, tiny_model):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        PILImage.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "batch").mkdir()
    PILImage.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "batch/ok.png")
    (tmp_path / "batch/broken.png").write_bytes(b"not a png")
    PILImage.new("RGB", (12, 10)).save(tmp_path / "g.gif")
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    state["conv_first.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(200)))  # a damaged video
    (tmp_path / "done").mkdir()
    PILImage.new("RGB", (48, 40)).save(tmp_path / "done/a_x4.png")
    (tmp_path / "rerun").mkdir()  # a finished in-place batch: an input and its output side by side
    PILImage.new("RGB", (12, 10)).save(tmp_path / "rerun/r.png")
    PILImage.new("RGB", (48, 40)).save(tmp_path / "rerun/r_x4.png")
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    for name, size in (("p", (48, 40)), ("q", (48, 40))):
        PILImage.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            tmp_path / f"hr/{name}.png"
        )
    PILImage.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "lr/p.png")  # q has no LR
    os.mkfifo(tmp_path / "fifo.png")
    assert run(["weights", "import", str(tiny_weights), "--name", "taken"]) == 0
    return {"dir": tmp_path, "w": str(tiny_weights)}


ROWS = [
    # 0: success
    (0, "upscale {dir}/a.png --model {w} -o {dir}/out"),
    (0, "upscale {dir}/a.png --model {w} -o {dir}/done --skip-existing"),
    (0, "--help"),
    (0, "--version"),
    (0, "weights list"),
    (0, "upscale {dir}/rerun --model {w} --skip-existing"),
    (0, "upscale {dir}/a.png --model {w} -s 2 -t 32 -f jpg --fp32 -o {dir}/short.jpg"),
    # 1: some inputs failed (the rest processed) or a runtime error
    (1, "upscale {dir}/batch --model {w} -o {dir}/out1"),
    (1, "upscale {dir}/a.png {dir}/g.gif --model {w} -o {dir}/out2"),
    (1, "upscale {dir}/a.png --model {dir}/nan.pth"),
    (1, "weights download realsr-df2k-rrdb --offline"),
    (1, "upscale {dir}/a.png --model {w} --outscale 1e6 -o {dir}/huge.png"),
    (1, "eval --hr-dir {dir}/hr --lr-dir {dir}/lr --model bicubic --no-lpips --no-niqe"),
    (1, "upscale {dir}/bad.mp4 {dir}/a.png --model {w} -o {dir}/out3"),
    # 2: usage errors
    (2, "upscale {dir}/a.png --no-such-option"),
    (2, ""),
    (2, "weights"),
    (2, "train"),
    (2, "upscale {dir}/a.png --model {w} --ext xyz"),
    (2, "upscale {dir}/a.png --model no-such-model"),
    (2, "upscale {dir}/a.png --model {dir}/missing.safetensors"),
    (2, "upscale {dir}/a.png --model {dir}/run"),
    (2, "weights import {w} --name bad/name"),
    (2, "weights import {w} --name taken"),
    (2, "upscale {dir}/a.png {dir}/b.png --model {w} -o {dir}/file.txt"),
    (2, "upscale {dir}/a.png {dir}/b.png --model {w} -o {dir}/one.png"),
    (2, "upscale {dir}/nothing.png --model {w}"),
    (2, "upscale {dir}/fifo.png --model {w}"),
    (2, "upscale {dir}/a.png --model {w} --suffix ../x"),
    (2, "upscale {dir}/a.png --model {w} --outscale inf"),
    (2, "upscale {dir}/a.png --model {w} --fp32 --precision bf16"),
    (2, "upscale {dir}/a.png {dir}/b.png --model {w} -o /proc/x"),
    (2, "weights import {w} --name " + "n" * 300),
    # issue 27: video options
    (2, "upscale {dir}/a.png --model {w} --crf 20"),
    (2, "upscale {dir}/bad.mp4 --model {w} --frames 9:2"),
    (2, "upscale {dir}/bad.mp4 --model {w} --video-codec h264 -o {dir}/v.webm"),
    # issue 26: checked before any work
    (2, "upscale {dir}/a.png --model {w} --tile 1"),
    (2, "upscale {dir}/a.png --model {w} --suffix " + "s" * 300),
    (2, "upscale {dir}/a.png --model {w} --json /proc/nope/r.json"),
    (2, "eval --hr-dir {dir}/hr --model bicubic --no-lpips --no-niqe --json {dir}/done"),
    (2, "train --config tiny-cpu --out {dir}/file.txt"),
    (2, "train --config tiny-cpu --out {dir}/t --set train.lr=-1"),
    (2, "weights import {w} --name auto"),
    (2, "weights rm spsr-x4"),
    (0, "weights rm --all --dry-run"),
]


@pytest.mark.parametrize(("code", "args"), ROWS, ids=[f"{c}:{a.split(' --model')[0][:40]}" for c, a in ROWS])
def test_exit_code(world, code, args, capsys):
    argv = args.format(**world).split()
    assert run(argv) == code, capsys.readouterr().err
    if code == 2 and argv[:1] == ["upscale"]:  # nothing was computed
        assert not any(
            p.name.endswith("_x4.png") for p in world["dir"].rglob("*") if not {"done", "rerun"} & set(p.parts)
        )


def test_readme_documents_these_codes():
    text = README.read_text()
    text = text[text.index("Exit codes (tested in") :].split("\n\n", 2)[1]  # the table under that line
    table = dict(re.findall(r"^\| (0|1|2|130) \| ([^|]+) \|", text, re.M))
    assert set(table) == {"0", "1", "2", "130"}
    assert "usage error" in table["2"] and "some inputs failed" in table["1"]
    assert "interrupted" in table["130"]


def test_an_interrupted_batch_exits_130(world, monkeypatch, capsys):
    from spsr_cli.engine import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "upscale_image", interrupted)
    assert run(f"upscale {world['dir']}/a.png --model {world['w']} -o {world['dir']}/int".split()) == 130
    assert "--skip-existing" in capsys.readouterr().err
