"""NSE weight files: write/read round trip, foreign files refused, registered names sha256-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError, UnknownModelError
from spsr_cli.model.nse import NSEConfig, NSENet
from spsr_cli.weights.manifest import load_manifest
from spsr_cli.weights.nse_files import load_nse, nse_entries, read_nse_file, resolve_nse, write_nse_file

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def test_files_round_trip_and_foreign_files_are_refused(tmp_path: Path) -> None:
    net = NSENet(NSEConfig(channels=5))
    path = tmp_path / "n.safetensors"
    write_nse_file(path, net, metadata={"method": "jigsaw"})
    loaded, meta = read_nse_file(path)
    assert loaded.config == NSEConfig(channels=5) and meta["method"] == "jigsaw" and meta["dtype"] == "float32"
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert resolve_nse(str(path)) == path
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"architecture": "spsr"})
    with pytest.raises(CheckpointMismatchError, match="not an NSE"):
        read_nse_file(tmp_path / "other.safetensors")
    with pytest.raises(UnknownModelError, match="neither a file nor a known structure extractor"):
        load_nse("no-such-nse")


def test_a_registered_file_with_a_wrong_sha256_is_refused(tmp_path: Path) -> None:
    from spsr_cli.files import write_json_atomic
    from spsr_cli.weights.manifest import local_manifest_path

    path = tmp_path / "x.safetensors"
    write_nse_file(path, NSENet(NSEConfig(channels=4)), metadata={})
    entry = {
        "name": "x-nse",
        "kind": "structure-extractor",
        "source": {"type": "file", "path": str(path), "sha256": "0" * 64},
    }
    write_json_atomic(local_manifest_path(), {"format_version": 1, "default": None, "models": [], "auxiliary": [entry]})
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        resolve_nse("x-nse")


def test_shipped_extractors_load_by_name_with_their_recorded_accuracy() -> None:
    shipped = {n: e for n, e in load_manifest().auxiliary.items() if e.kind == "structure-extractor"}
    assert {"nse-contrastive", "nse-jigsaw"} <= set(shipped)
    for name, entry in shipped.items():
        nse, meta = load_nse(name)
        assert json.loads(meta["config"]) == nse.config.to_dict()
        assert entry.get("method") == meta["method"] and 0 < entry.get("accuracy")["held_out"] <= 1
        assert all(v.dtype == torch.float32 for v in nse.state_dict().values())


def test_local_extractors_join_the_packaged_ones_without_shadowing_them(tmp_path: Path) -> None:
    from spsr_cli.files import write_json_atomic
    from spsr_cli.weights.manifest import local_manifest_path

    path = tmp_path / "mine.safetensors"
    sha = write_nse_file(path, NSENet(NSEConfig(channels=4)), metadata={})
    mine = {"name": "mine", "kind": "structure-extractor", "source": {"type": "file", "path": str(path), "sha256": sha}}
    clash = {**mine, "name": "nse-jigsaw"}
    registry = {"format_version": 1, "default": None, "models": [], "auxiliary": [mine, clash]}
    write_json_atomic(local_manifest_path(), registry)
    entries = nse_entries()
    assert entries["mine"][0].origin == "local" and entries["mine"][1] == path
    assert entries["nse-jigsaw"][0].origin == "packaged"
    assert resolve_nse("mine") == path
