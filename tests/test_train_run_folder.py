"""Run folder: resume rules, the atomic config.yaml, log rows, thread restore, the divergence error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from spsr_cli.errors import UsageError
from spsr_cli.train.checkpoint import CHECKPOINT_DIR, save_checkpoint
from spsr_cli.train.config import load_config
from spsr_cli.train.run_folder import (
    RunLog,
    TrainingDivergedError,
    check_finite,
    drop_rows_after,
    open_run_folder,
    resume_state,
    torch_threads,
)


def _refuse(state: dict, path: Path) -> None:
    raise UsageError(f"cannot resume from {path}")


def test_a_fresh_run_refuses_a_folder_with_checkpoints_and_resume_takes_the_newest(tmp_path: Path) -> None:
    assert resume_state(tmp_path, resume=False, check=_refuse) is None  # empty folder: fresh start
    assert resume_state(tmp_path / "new", resume=True, check=_refuse) is None  # nothing to resume yet
    save_checkpoint(tmp_path, 2, {"x": 1})
    save_checkpoint(tmp_path, 5, {"x": 2})
    with pytest.raises(UsageError, match="--resume"):
        resume_state(tmp_path, resume=False, check=_refuse)
    seen = []
    state = resume_state(tmp_path, resume=True, check=lambda found, path: seen.append(path.name))
    assert state is not None and state["step"] == 5 and state["x"] == 2 and seen == ["step_00000005.pt"]
    with pytest.raises(UsageError, match="step_00000005"):
        resume_state(tmp_path, resume=True, check=_refuse)


def test_the_run_folder_gets_config_yaml_atomically_and_log_rows(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / CHECKPOINT_DIR).mkdir(parents=True)
    stale = run / CHECKPOINT_DIR / ".step_00000004.pt.999999999.tmp"  # a killed save's temporary (no such pid)
    stale.write_bytes(b"half")
    cfg = load_config(None, ["train.steps=7"])
    with open_run_folder(run, cfg) as run_log:
        run_log.write({"event": "start", "step": 0})
        run_log.write({"step": 1, "loss": 0.5})
    assert load_config(run / "config.yaml") == cfg
    assert not stale.exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "log.jsonl"]  # no temporaries
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [list(r)[0] for r in rows] == ["time", "time"] and rows[1]["loss"] == 0.5
    with open_run_folder(run, cfg) as run_log:  # a resumed run appends
        run_log.write({"event": "stop"})
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    RunLog(None).write({"ignored": True})  # other ranks write nothing


def test_a_resumed_run_drops_the_rows_logged_after_its_checkpoint(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.synthetic=2"])
    with open_run_folder(tmp_path, cfg) as run_log:
        for step in range(1, 7):
            run_log.write({"step": step, "loss_g": float(step)})
        run_log.write({"event": "validation", "step": 6, "psnr": 20.0})
        run_log.write({"event": "note"})  # no step: kept
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 7, "loss')  # torn by a kill: not JSON, kept as a line
    with open_run_folder(tmp_path, cfg, resumed_step=4) as run_log:
        run_log.write({"step": 5, "loss_g": 5.5})
    lines = (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]
    assert [r["step"] for r in rows if "loss_g" in r] == [1, 2, 3, 4, 5]
    assert rows[-1]["loss_g"] == 5.5 and not any(r.get("event") == "validation" for r in rows)
    assert {"event": "note"}.items() <= rows[-2].items() and '{"step": 7, "loss' in lines
    assert drop_rows_after(tmp_path / "log.jsonl", 10) == 0 and drop_rows_after(tmp_path / "missing.jsonl", 0) == 0


def test_the_thread_count_is_restored_when_the_run_fails() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_a_non_finite_loss_names_the_step_and_the_fix() -> None:
    check_finite({"loss": 1.0, "accuracy": 0.5}, 3, "lower train.lr")
    for bad in (math.nan, math.inf):
        with pytest.raises(TrainingDivergedError, match=r"non-finite loss at step 3: .*; lower train\.lr"):
            check_finite({"loss": bad}, 3, "lower train.lr")
