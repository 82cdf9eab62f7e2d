"""Checkpoints: atomic writes, newest-first discovery, pruning, RNG states, --init sources."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import basicsr_rrdb_state
from safetensors.torch import save_file

from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_path,
    initialise_generator,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from spsr_cli.weights.store import write_generator_file

TINY = SPSRConfig(nf=8, nb=2, gc=4)


def test_save_list_latest_and_prune(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, {"payload": torch.tensor([step])}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 15)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["step"] == 15 and state["payload"].item() == 15
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_a_half_written_file_is_never_taken_for_a_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 4, {"x": torch.zeros(1)})
    (tmp_path / "checkpoints" / ".step_00000008.pt.123.tmp").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 4)
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_failed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"x": torch.zeros(1)})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(tmp_path, 2, {"x": lambda: None})  # not picklable: torch.save fails midway
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoints" / "step_00000001.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(latest_checkpoint(tmp_path))["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_init_from_an_spsr_generator_file(tmp_path: Path) -> None:
    source = SPSRNet(config=TINY)
    path = tmp_path / "g.safetensors"
    write_generator_file(path, source.state_dict(), TINY, source="test", licence="test", dtype=torch.float32)
    model = SPSRNet(config=TINY)
    report = initialise_generator(model, path)
    assert report["kind"] == "spsr-generator" and not report["random"]
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_init_from_a_basicsr_rrdb_is_the_exact_warm_start(tmp_path: Path) -> None:
    rrdb = basicsr_rrdb_state()
    path = tmp_path / "rrdb.safetensors"
    save_file(rrdb, str(path))
    model = SPSRNet(config=TINY)
    report = initialise_generator(model, path)
    assert report["kind"] == "rrdb-warm-start"
    assert torch.equal(model.conv_first.weight, rrdb["conv_first.weight"])
    assert torch.equal(model.trunk[1].rdb3.conv5.bias, rrdb["body.1.rdb3.conv5.bias"])
    assert torch.equal(model.fusion.out.weight, rrdb["conv_last.weight"])  # conv_last is used, not dropped
    assert "hr_conv0.bias" in report["constructed"] and "fusion.concat.weight" in report["constructed"]
    assert any(k.startswith("branch.") for k in report["random"])


def test_init_from_a_run_folder_uses_its_ema(tmp_path: Path) -> None:
    ema = SPSRNet(config=TINY)
    save_checkpoint(tmp_path / "run", 3, {"ema": ema.state_dict(), "model": SPSRNet(config=TINY).state_dict()})
    model = SPSRNet(config=TINY)
    report = initialise_generator(model, tmp_path / "run")
    assert report["kind"] == "training-checkpoint"
    assert torch.equal(model.fusion.out.weight, ema.fusion.out.weight)
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        initialise_generator(model, tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        initialise_generator(model, tmp_path / "missing.pth")


def test_stale_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path: Path) -> None:
    import os

    from spsr_cli.train.checkpoint import save_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a process that dies at once (kill -9 mid-save)
        os._exit(0)
    os.waitpid(pid, 0)
    stale = folder / f".step_00000004.pt.{pid}.tmp"
    live = folder / f".step_00000004.pt.{os.getppid()}.tmp"  # a running process's: kept
    unrelated = folder / ".notes.tmp"
    for path in (stale, live, unrelated):
        path.write_bytes(b"half")
    save_checkpoint(tmp_path, 5, {"x": 1})
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_a_pickled_checkpoint_message_never_suggests_weights_only_false(tmp_path: Path) -> None:
    import argparse

    from spsr_cli.train.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "odd.pt"
    torch.save({"format_version": 1, "step": 1, "args": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "argparse.Namespace" in str(err.value) and "weights_only" not in str(err.value)


def test_a_killed_writers_temporary_is_removed_a_locked_one_kept(tmp_path: Path) -> None:
    import fcntl
    import os

    from spsr_cli.train.checkpoint import remove_stale_temporaries

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / ".step_00000004.pt.k2j_9xq0.tmp"  # what kill -9 during atomic_torch_save leaves
    live = folder / ".step_00000004.pt.abcd1234.tmp"
    for path in (stale, live):
        path.write_bytes(b"half")
    with open(live, "rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # as atomic_torch_save holds it while writing
        assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
    assert remove_stale_temporaries(tmp_path) == [live]  # its writer is gone now
    save_checkpoint(tmp_path, 1, {"x": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (folder / "step_00000001.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_full_disk_is_named_with_the_free_space_and_the_fix(tmp_path: Path) -> None:
    """Issue 26, defect 9: training on a full disk ended in ``RuntimeError [enforce fail at
    inline_container.cc:672] unexpected pos`` at the first checkpoint. The disk is filled for real in a
    child process: a file size limit makes the write fail exactly as a full disk does."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import resource, signal, torch
        from spsr_cli.train.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
        save_checkpoint({str(tmp_path)!r}, 1, {{"x": torch.zeros(10)}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
        try:
            save_checkpoint({str(tmp_path)!r}, 2, {{"x": torch.zeros(100_000)}})
        except CheckpointError as err:
            print("CheckpointError:", err)
        print("kept:", [s for s, _ in list_checkpoints({str(tmp_path)!r})])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "CheckpointError: cannot write the checkpoint" in done.stdout and "MB are free there" in done.stdout
    assert "--resume" in done.stdout and "kept: [1]" in done.stdout
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]
