"""File utilities every package shares: sha256 in chunks, atomic writes with one file-mode
policy, and safetensors reading/writing.

One policy for every file this tool writes (images, weights, reports, configs, registries):
the data goes to a temporary file beside the target (``.NAME.XXXXXXXX.tmp``, with NAME
shortened so the whole name fits in 255 bytes), which is renamed over the target only when
complete, so the target is always either the old file or the whole new one. The new file
gets the mode a plain ``open()`` would give it under the current umask (0666 & ~umask); the
umask is read without being changed (changing it is process-wide and races with threads).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Union

PathLike = Union[str, "os.PathLike[str]"]

#: Longest file name most filesystems accept, in bytes.
NAME_MAX = 255
_TMP_SUFFIX = ".tmp"
_RANDOM_LEN = 8  # tempfile's random part
_CHUNK = 1 << 20


# ---------------------------------------------------------------- hashing


def sha256_hasher() -> Any:
    """A fresh incremental sha256 (``update``/``hexdigest``), for data hashed while it streams."""
    return hashlib.sha256()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    hasher = sha256_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def sha256_file(path: PathLike, *, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (never the whole file in memory)."""
    hasher = sha256_hasher()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
    return hasher.hexdigest()


# ---------------------------------------------------------------- atomic writes


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under the current umask (0666 & ~umask)."""
    try:  # Linux: read the umask without changing it
        status = Path("/proc/self/status").read_text(encoding="ascii")
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)  # elsewhere: the only portable way, restored at once
        os.umask(mask)
    return 0o666 & ~mask


def shorten_name(name: str, room: int) -> str:
    """``name`` cut (on a UTF-8 boundary) to at most ``room`` bytes; unchanged when it fits."""
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room])
        while len(os.fsencode(name)) > room or name.endswith("\udcff"):
            name = name[:-1]
    return name


def temporary_prefix(path: PathLike) -> str:
    """The ``.NAME.`` prefix of ``path``'s temporaries, NAME shortened (on a UTF-8 boundary) so that
    prefix + 8 random characters + ``.tmp`` fit in :data:`NAME_MAX` bytes."""
    return f".{shorten_name(Path(path).name, NAME_MAX - 2 - _RANDOM_LEN - len(_TMP_SUFFIX))}."


def temporary_files(path: PathLike) -> list[Path]:
    """Temporaries (regular files) that an atomic write of ``path`` may have left (from a killed process)."""
    path = Path(path)
    pattern = re.compile(re.escape(temporary_prefix(path)) + r"[a-z0-9_]{%d}" % _RANDOM_LEN + re.escape(_TMP_SUFFIX))
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


@contextlib.contextmanager
def atomic_path(path: PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception it is
    given :func:`file_mode` and renamed onto ``path``, otherwise it is removed.

    For libraries that write to a file name (safetensors, torch.save, Pillow). ``durable``
    fsyncs the file and its folder (training checkpoints). The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=_TMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # mkstemp makes 0600
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_open(
    path: PathLike, mode: str = "wb", *, encoding: Union[str, None] = None, durable: bool = False
) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that writes atomically (see :func:`atomic_path`); ``mode`` is ``"wb"`` or ``"w"``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes new files only: mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path, durable=durable) as tmp:
        kwargs = {"encoding": encoding or "utf-8", "newline": ""} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (plus a final newline) atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- checks before work


def nearest_existing(path: PathLike) -> Path:
    """``path`` made absolute, or its nearest ancestor that exists (where it is to be created)."""
    found = Path(os.path.abspath(path))
    while not os.path.lexists(found) and found != found.parent:
        found = found.parent
    return found


def unwritable_reason(folder: PathLike) -> str | None:
    """Why no file can be created in the existing ``folder`` (the OS's words), or None when one can.

    Tried by creating and removing a file: ``os.access`` says yes to root everywhere, even in ``/proc``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".spsr-probe.", suffix=_TMP_SUFFIX)
    except OSError as err:
        return f"cannot write into {folder}: {err.strerror or err}"
    os.close(fd)
    os.unlink(probe)
    return None


def check_output_file(path: PathLike, option: str) -> None:
    """Refuse, before any work, an output file (``--json FILE``...) that could not be written: an existing
    folder, or a place where no file can be created. Raises :class:`~spsr_cli.errors.UsageError` naming
    ``option`` and the fix."""
    from spsr_cli.errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; name a file to write")
    reason = unwritable_reason(nearest_existing(path.parent))
    if reason is not None:
        raise UsageError(f"{option} {path}: {reason}; choose another place or fix its permissions")


def check_output_folder(path: PathLike, option: str) -> None:
    """Refuse, before any work, an output folder (``--save-images DIR``...) that is a file or where
    nothing can be written (it may not exist yet). Raises :class:`~spsr_cli.errors.UsageError`."""
    from spsr_cli.errors import UsageError

    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"{option} {path} exists and is not a folder; name a folder (it is created)")
    reason = unwritable_reason(nearest_existing(path))
    if reason is not None:
        raise UsageError(f"{option} {path}: {reason}; choose another folder or fix its permissions")


# ---------------------------------------------------------------- safetensors


def save_safetensors_atomic(path: PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` (name -> torch tensor) as safetensors with string ``metadata``, atomically.

    The bytes depend only on the tensors and the metadata (safetensors itself writes the
    metadata in a random order), so a file converted twice has one sha256 that can be pinned.
    """
    from safetensors.torch import save

    with atomic_open(path, "wb") as handle:
        handle.write(_sorted_metadata(save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata))))
    return Path(path)


def _sorted_metadata(blob: bytes) -> bytes:
    """A serialised safetensors file with its ``__metadata__`` keys in sorted order (data unchanged)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def read_safetensors(path: PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors name -> torch tensor on the CPU, metadata) of a safetensors file.

    Raises ``ValueError`` naming the file when it is not a readable safetensors file (callers
    turn it into their own error with the fix).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    return tensors, metadata


__all__ = [
    "NAME_MAX",
    "atomic_open",
    "atomic_path",
    "check_output_file",
    "check_output_folder",
    "file_mode",
    "nearest_existing",
    "read_safetensors",
    "save_safetensors_atomic",
    "sha256_bytes",
    "sha256_file",
    "sha256_hasher",
    "shorten_name",
    "temporary_files",
    "temporary_prefix",
    "write_bytes_atomic",
    "write_json_atomic",
    "unwritable_reason",
    "write_text_atomic",
]
