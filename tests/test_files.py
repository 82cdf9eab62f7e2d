"""File utilities: hashing, atomic writes (mode follows the umask, nothing half-written), safetensors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from spsr_cli.files import (
    NAME_MAX,
    atomic_open,
    atomic_path,
    file_mode,
    read_safetensors,
    save_safetensors_atomic,
    sha256_bytes,
    sha256_file,
    temporary_files,
    temporary_prefix,
    write_json_atomic,
    write_text_atomic,
)


def test_sha256_of_file_in_chunks_equals_the_whole(tmp_path: Path) -> None:
    data = os.urandom(3 * 1000 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest() == sha256_bytes(data)


def test_atomic_write_follows_the_umask_and_leaves_no_temporary(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
        target = write_text_atomic(tmp_path / "a" / "report.json", "x")
    finally:
        os.umask(old)
    assert target.read_text() == "x"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert temporary_files(target) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_temporary_of_a_long_name_fits_the_file_name_limit(tmp_path: Path) -> None:
    name = "é" * 100 + "x" * 40 + ".png"  # 244 bytes: legal, but '.NAME.XXXXXXXX.tmp' would not be
    assert len(name.encode()) <= NAME_MAX
    prefix = temporary_prefix(tmp_path / name)
    assert len(prefix.encode()) + 8 + len(".tmp") <= NAME_MAX
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.name.startswith(prefix) and tmp.parent == tmp_path
        assert temporary_files(tmp_path / name) == [tmp]
        tmp.write_bytes(b"ok")
    assert (tmp_path / name).read_bytes() == b"ok"


def test_json_and_safetensors_round_trip(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "d.json", {"a": 1})
    assert (tmp_path / "d.json").read_text() == '{\n  "a": 1\n}\n'
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}  # non-contiguous
    save_safetensors_atomic(tmp_path / "w.safetensors", tensors, {"k": "v"})
    loaded, meta = read_safetensors(tmp_path / "w.safetensors")
    assert meta == {"k": "v"} and torch.equal(loaded["w"], tensors["w"])
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_output_checks_name_the_option_and_the_reason(tmp_path):
    """Issue 26, defect 4: output paths are checked before work (tried by creating a file: root passes
    ``os.access`` everywhere)."""
    import pytest

    from spsr_cli.errors import UsageError
    from spsr_cli.files import check_output_file, check_output_folder, nearest_existing, unwritable_reason

    assert nearest_existing(tmp_path / "a/b/c.json") == tmp_path
    assert unwritable_reason(tmp_path) is None and list(tmp_path.iterdir()) == []
    assert "cannot write into /proc" in unwritable_reason(Path("/proc"))
    check_output_file(tmp_path / "new/r.json", "--json")
    check_output_folder(tmp_path / "new/dir", "--save-images")
    with pytest.raises(UsageError, match="--json .* is a folder"):
        check_output_file(tmp_path, "--json")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="--save-images .* is not a folder"):
        check_output_folder(tmp_path / "f", "--save-images")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_output_file(tmp_path / "f/r.json", "--json")
