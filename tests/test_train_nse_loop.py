"""NSE training loop: a tiny run that resumes exactly and exports; the thread count is restored on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spsr_cli.errors import NameTakenError
from spsr_cli.train.checkpoint import list_checkpoints
from spsr_cli.train.data import NoTrainingImagesError
from spsr_cli.train.export import export_run
from spsr_cli.train.nse_config import load_nse_config
from spsr_cli.train.nse_loop import train_nse
from spsr_cli.weights.nse_files import load_nse

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.mark.parametrize("method", ["contrastive", "jigsaw"])
def test_tiny_run_trains_resumes_exactly_and_exports(tmp_path: Path, method: str) -> None:
    cfg = load_nse_config(
        CONFIGS / "nse-tiny.yaml",
        [f"task.method={method}", "train.steps=8", "train.checkpoint_every=4", "train.eval_every=8"],
    )
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
    with pytest.raises(NameTakenError, match="exists already"):
        export_run(tmp_path / "full", name=f"tiny-{method}")


def test_a_failed_run_restores_the_thread_count_and_writes_no_config(tmp_path: Path) -> None:
    cfg = load_nse_config(CONFIGS / "nse-tiny.yaml", ["train.threads=3", f"data.hr_dirs=[{tmp_path / 'missing'}]"])
    before = torch.get_num_threads()
    with pytest.raises(NoTrainingImagesError, match="does not exist"):
        train_nse(cfg, tmp_path / "run")
    assert torch.get_num_threads() == before
    assert not (tmp_path / "run" / "config.yaml").exists()
