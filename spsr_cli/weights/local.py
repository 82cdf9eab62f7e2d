"""Where a registry model's file lies on this machine: no torch, no network.

A bundled model's file ships inside the package, an imported or trained one is where the local
registry says, a hub model is in the Hugging Face cache (at its pinned revision) and a model from
a PyPI archive is kept, converted to safetensors, in ``$SPSR_HOME/converted``. Nothing here checks
a file's sha256: callers that use a file compare it with the entry's pin
(:func:`~spsr_cli.weights.loader.ensure_model_file`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from spsr_cli.weights.hub import cached_hub_file
from spsr_cli.weights.manifest import BundledSource, HubSource, ModelEntry, PyPIModelSource, Source, spsr_home


def bundled_path(source: BundledSource) -> Path:
    """The file of a model that ships with spsr-cli (inside the installed package)."""
    return Path(str(resources.files("spsr_cli") / source.path))


def converted_model_path(name: str) -> Path:
    """Where a registry model converted from a PyPI archive is kept (the file may not exist yet)."""
    return spsr_home() / "converted" / f"{name}.safetensors"


def cached_model_file(entry: ModelEntry) -> Path | None:
    """The entry's file if it is already on disk, else None (nothing is downloaded or converted)."""
    return model_file(entry.name, entry.source)


def model_file(name: str, source: Source) -> Path | None:
    """The file of the registry model ``name`` whose source is ``source``, if it is already on disk, else None
    (for callers that read the registry's JSON without torch: :func:`~spsr_cli.weights.manifest.parse_source`)."""
    if isinstance(source, HubSource):
        return cached_hub_file(repo_id=source.repo_id, filename=source.filename, revision=source.revision)
    if isinstance(source, PyPIModelSource):
        path = converted_model_path(name)
    else:
        path = bundled_path(source) if isinstance(source, BundledSource) else Path(source.path)
    return path if path.is_file() else None


__all__ = ["bundled_path", "cached_model_file", "converted_model_path", "model_file"]
