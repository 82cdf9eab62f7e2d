"""Per-output claims, so concurrent ``spsr upscale`` runs into one folder never render a file twice.

Before an output ``NAME`` is rendered, its writer takes an exclusive, non-blocking
``flock`` on ``.NAME.spsr-claim`` beside it and keeps it until the output is renamed into
place; a second process that finds the lock taken leaves that output alone. The kernel
drops the lock when its process dies (even ``kill -9``), so a claim left behind by a
killed run is recognised as stale: the next run removes it together with the killed
writer's temporary ``.NAME.XXXXXXXX.tmp`` (see :func:`spsr_cli.files.temporary_files`).
Only files of exactly these two namings are ever removed. A claim name that would pass the
255 bytes a file name may have is shortened, with a hash of the full name to keep it unique;
such a claim file records the output's name after the process id.

Where ``fcntl`` is missing (Windows) claims are a no-op: every output counts as claimed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from spsr_cli.files import NAME_MAX, shorten_name, temporary_files

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
CLAIM_SUFFIX = ".spsr-claim"


def claim_path(target: Path) -> Path:
    """``DIR/.NAME.spsr-claim`` for the output ``DIR/NAME``; where that passes :data:`NAME_MAX` bytes,
    ``DIR/.SHORT~HASH.spsr-claim`` (NAME cut to fit, HASH: 12 hex digits of NAME's sha256)."""
    target = Path(target)
    name = f".{target.name}{CLAIM_SUFFIX}"
    if len(os.fsencode(name)) <= NAME_MAX:
        return target.with_name(name)
    digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:12]
    short = shorten_name(target.name, NAME_MAX - 2 - len(digest) - len(CLAIM_SUFFIX))
    return target.with_name(f".{short}~{digest}{CLAIM_SUFFIX}")


def _is_shortened(target: Path) -> bool:
    return claim_path(target).name != f".{Path(target).name}{CLAIM_SUFFIX}"


class Claim:
    """An exclusive claim on one output; release it with :meth:`release` (or use ``with``)."""

    def __init__(self, target: Path, fd: int | None) -> None:
        self.target = Path(target)
        self.path = claim_path(self.target)
        self._fd = fd

    def release(self) -> None:
        """Remove the claim file, then drop the lock (the order keeps a waiting process from
        locking a file that is about to disappear)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(path: Path) -> int | None:
    """Lock ``path`` (created if needed); the fd, or None when another process holds it."""
    for _ in range(8):  # retry while a holder removes the file under us
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder just removed: try the new one
    return None


def claim_output(target: Path) -> Claim | None:
    """Claim ``target`` for writing, or None when another live process is writing it.

    Holding the claim, stale temporaries of ``target`` (left by a killed writer) are removed.
    The target's folder is created if needed. Raises OSError when the folder is not writable.
    """
    target = Path(target)
    if fcntl is None:  # pragma: no cover - Windows
        return Claim(target, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(claim_path(target))
    if fd is None:
        return None
    claim = Claim(target, fd)
    try:
        _record_holder(fd, target.name if _is_shortened(target) else None)
    except OSError:  # e.g. a full disk: release the lock and leave no empty claim file behind
        claim.release()
        raise
    for stale in temporary_files(target):
        log.info("removing %s, left by an interrupted run", stale)
        stale.unlink(missing_ok=True)
    return claim


def _record_holder(fd: int, name: str | None = None) -> None:
    """Write this process's id into a claim file (for :func:`holder`'s messages), and the output's
    ``name`` where the claim's own name is shortened (for :func:`remove_stale_claims`)."""
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode() + (os.fsencode(name) + b"\n" if name is not None else b""))


def holder(target: Path) -> str:
    """The process id recorded in ``target``'s claim file (for messages), or ``"?"``."""
    try:
        lines = claim_path(target).read_bytes().splitlines()
    except OSError:
        return "?"
    return lines[0].decode("ascii", "replace").strip() if lines and lines[0].strip() else "?"


def _claimed_target(path: Path) -> Path | None:
    """The output a claim file ``path`` stands for (a shortened claim: the name it records), or None."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        lines = []
    if len(lines) > 1 and b"/" not in lines[1]:
        recorded = path.with_name(os.fsdecode(lines[1]))
        if claim_path(recorded) == path:
            return recorded
    target = path.with_name(path.name[1 : -len(CLAIM_SUFFIX)])
    return target if claim_path(target) == path else None


def remove_stale_claims(folder: Path) -> list[Path]:
    """Remove claim files in ``folder`` that no live process holds, with their temporaries.

    These are what a killed ``spsr upscale`` leaves; returns the removed paths.
    """
    removed: list[Path] = []
    if fcntl is None:  # pragma: no cover - Windows
        return removed
    try:
        claims = [p for p in Path(folder).iterdir() if p.name.startswith(".") and p.name.endswith(CLAIM_SUFFIX)]
    except OSError:
        return removed
    for path in claims:
        try:
            fd = _lock(path)
        except OSError:
            continue
        if fd is None:
            continue  # a live run holds it
        target = _claimed_target(path)
        for tmp in temporary_files(target) if target is not None else []:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        stale = Claim(target or path.with_name(path.name[1 : -len(CLAIM_SUFFIX)]), fd)
        stale.path = path
        stale.release()
        removed.append(path)
    return removed
