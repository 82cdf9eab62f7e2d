"""Per-output claims: concurrent runs never write one output twice; a killed run's leftovers go."""

import os
import signal
import time

from spsr_cli.engine.claims import claim_output, claim_path, remove_stale_claims


def _hold_in_child(target, kill: bool):
    """Fork a process that claims ``target`` (and leaves a temporary); return its pid once it holds it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            claim = claim_output(target)
            (target.parent / f".{target.name}.abcd1234.tmp").write_bytes(b"half")
            os.write(write, b"1" if claim is not None else b"0")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    if kill:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return pid


def test_a_claim_held_by_a_live_process_is_refused(tmp_path):
    target = tmp_path / "out" / "a_x4.png"
    pid = _hold_in_child(target, kill=False)
    try:
        assert claim_output(target) is None
        assert claim_path(target).read_text().strip() == str(pid)
        assert remove_stale_claims(target.parent) == []  # a live claim and its temporary stay
        assert (target.parent / ".a_x4.png.abcd1234.tmp").exists()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_killed_writer_leaves_nothing_behind_after_the_next_run(tmp_path):
    target = tmp_path / "a_x4.png"
    other = tmp_path / "b_x4.png"
    unrelated = tmp_path / ".notes.txt.abcd1234.tmp"
    unrelated.write_bytes(b"not ours to delete")
    _hold_in_child(target, kill=True)  # kill -9 while holding the claim, mid-write
    _hold_in_child(other, kill=True)
    assert claim_path(target).exists() and (tmp_path / ".a_x4.png.abcd1234.tmp").exists()
    with claim_output(target) as claim:  # the next run writing it takes over and cleans up
        assert claim is not None and not (tmp_path / ".a_x4.png.abcd1234.tmp").exists()
    assert not claim_path(target).exists()
    removed = remove_stale_claims(tmp_path)  # and leftovers of outputs it does not write go too
    assert sorted(p.name for p in removed) == [".b_x4.png.abcd1234.tmp", ".b_x4.png.spsr-claim"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [unrelated.name]


def test_a_claim_that_cannot_be_written_leaves_no_claim_file(tmp_path, monkeypatch):
    import errno

    import pytest

    from spsr_cli.engine import claims

    def full(fd, *name):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(claims, "_record_holder", full)
    with pytest.raises(OSError, match="No space"):
        claims.claim_output(tmp_path / "a_x4.png")
    assert list(tmp_path.iterdir()) == []  # no 0-byte .a_x4.png.spsr-claim left behind
    monkeypatch.undo()
    claim = claims.claim_output(tmp_path / "a_x4.png")  # and the lock was released
    assert claim is not None
    claim.release()


def test_a_long_output_name_gets_a_shortened_unique_claim(tmp_path):
    """Issue 26 (low): a claim for a 240-character output name passed 255 bytes, so it always failed."""
    from spsr_cli.files import NAME_MAX, temporary_prefix

    long_a, long_b = tmp_path / ("a" * 240 + "_x4.png"), tmp_path / ("a" * 240 + "_x4.jpg")
    assert len(claim_path(long_a).name.encode()) <= NAME_MAX and claim_path(long_a) != claim_path(long_b)
    with claim_output(long_a) as first, claim_output(long_b) as second:
        assert first is not None and second is not None  # one name cut the same way: still two claims
    assert list(tmp_path.iterdir()) == []
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: claim, leave a temporary, get killed
        try:
            claim_output(long_a)
            (tmp_path / f"{temporary_prefix(long_a)}abcd1234.tmp").write_bytes(b"half")
            os.write(write, b"1")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    removed = remove_stale_claims(tmp_path)
    assert len(removed) == 2 and list(tmp_path.iterdir()) == []
