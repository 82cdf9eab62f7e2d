"""DistributedDataParallel on two CPU processes (gloo): weights stay identical across ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from spsr_cli.train.config import load_config
from spsr_cli.train.distributed import DistContext, setup
from spsr_cli.train.loop import train

CONFIG = [
    "model.nf=8",
    "model.nb=2",
    "model.gc=4",
    "data.synthetic=4",
    "data.crop_size=32",
    "data.batch_size=2",
    "loss.d_channels=4",
    "loss.perceptual_backbone=none",
    "train.threads=1",
    "train.device=cpu",
    "train.lr=2e-3",
    "train.lr_d=2e-3",
    "train.steps=4",
    "train.fusion_only_steps=2",
    "train.checkpoint_every=4",
    "train.log_every=1",
    "logging.progress=false",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    result = train(load_config(None, CONFIG), run_dir)
    state = {name: {k: v.clone() for k, v in sd.items()} for name, sd in result.state.items()}
    torch.save({"state": state, "history": result.history}, Path(out_dir) / f"rank{rank}.pt")


def test_single_process_needs_no_process_group() -> None:
    ctx = setup("cpu")
    assert ctx == DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert not ctx.distributed and ctx.is_main


def test_two_gloo_processes_keep_identical_weights(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # the two ranks are spawned from a fresh interpreter, so nothing earlier tests loaded into this
    # process (native runtimes, their threads and signal handlers) takes part
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import torch.multiprocessing as mp; "
        "from test_train_distributed import _free_port, _worker; "
        "mp.spawn(_worker, args=(2, _free_port(), sys.argv[2], sys.argv[3]), nprocs=2, join=True)"
    )
    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", code, tests, str(tmp_path / "run"), str(out)], timeout=600)
    assert done.returncode == 0
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    for name in ("model", "ema", "d_image", "d_gradient"):
        for key, value in r0["state"][name].items():
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue  # BN statistics are per-process buffers, not trained weights
            assert torch.equal(value, r1["state"][name][key]), f"{name}.{key} differs across ranks"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "it_s"} for r in rows]  # noqa: E731
    assert strip(r0["history"]) == strip(r1["history"])  # logged losses are averaged over ranks
    assert (tmp_path / "run" / "checkpoints" / "step_00000004.pt").is_file()  # written once, by rank 0

    # the update used both ranks' batches: one process alone (rank 0's data) ends elsewhere
    single = train(load_config(None, CONFIG), tmp_path / "single")
    assert not torch.equal(single.state["model"]["conv_first.weight"], r0["state"]["model"]["conv_first.weight"])
