"""`spsr eval` on the command line: messages, exit codes and output files (the work: tests/test_eval_runner.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
