"""Reading and writing generator weight files, and importing them into the local registry.

Our files are safetensors with string metadata: ``format`` ("spsr-cli"), ``architecture``
("spsr"), ``config`` (JSON of :class:`SPSRConfig`), ``scale``, ``source`` and ``licence``.
``.pth`` files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from spsr_cli.errors import CheckpointMismatchError, UnknownModelError
from spsr_cli.model.checkpoint import StateDict, build_generator, canonicalize_state_dict
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.weights.hub import sha256_file
from spsr_cli.weights.manifest import FileSource, ModelEntry, add_local_entry, load_manifest, spsr_home, validate_name

FORMAT_TAG = "spsr-cli"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


@dataclass(frozen=True)
class LoadedWeights:
    """A canonical state dict with the config it belongs to and the file's metadata."""

    state_dict: StateDict
    config: SPSRConfig
    metadata: dict[str, str]


def read_weights_file(path: Path) -> LoadedWeights:
    """Read a .safetensors or .pth generator checkpoint into the canonical layout (not yet loaded)."""
    path = Path(path)
    if not path.is_file():
        raise UnknownModelError(f"checkpoint file {path} does not exist")
    suffix = path.suffix.lower()
    metadata: dict[str, str] = {}
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                raw = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointMismatchError(f"{path} is not a readable safetensors file: {err}") from None
    elif suffix in TORCH_SUFFIXES:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types (UnpicklingError, RuntimeError, ...)
            raise CheckpointMismatchError(
                f"{path} could not be loaded with torch.load(weights_only=True): {err}. "
                "Only plain tensor state dicts are accepted; convert other pickles first."
            ) from None
    else:
        raise UnknownModelError(
            f"{path}: unsupported checkpoint extension {suffix!r}; use .safetensors or .pth"
        )
    state_dict, inferred = canonicalize_state_dict(raw)
    config = inferred
    if "config" in metadata:
        try:
            config = SPSRConfig.from_dict(json.loads(metadata["config"]))
        except (ValueError, TypeError) as err:
            raise CheckpointMismatchError(f"{path}: its stored config is invalid ({err})") from None
    return LoadedWeights(state_dict=state_dict, config=config, metadata=metadata)


def load_weights_file(path: Path) -> SPSRNet:
    """Build the generator stored in ``path`` (strict; float32; train mode)."""
    loaded = read_weights_file(path)
    return build_generator(loaded.state_dict, loaded.config)


def write_generator_file(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: SPSRConfig,
    *,
    source: str,
    licence: str,
    dtype: torch.dtype = torch.float16,
    extra_metadata: Mapping[str, str] | None = None,
) -> str:
    """Write a canonical state dict as safetensors with metadata, atomically; return its sha256.

    The state dict is validated strictly against ``config`` first.
    """
    from safetensors.torch import save_file

    build_generator(state_dict, config)  # refuses mismatches before anything is written
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": FORMAT_TAG, "architecture": "spsr", "config": json.dumps(config.to_dict()),
        "scale": str(config.scale), "source": source, "licence": licence, "dtype": str(dtype).removeprefix("torch."),
        **dict(extra_metadata or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def _ensure_name_free(name: str, *, replace: bool) -> None:
    """Refuse a name already in the registry (a released one always; a local one unless ``replace``)."""
    validate_name(name)
    existing = load_manifest().models.get(name)
    if existing is None or (existing.origin == "local" and replace):
        return
    if existing.origin == "packaged":
        raise UnknownModelError(f"a model named {name!r} exists already (a released model); choose another --name")
    raise UnknownModelError(f"a model named {name!r} exists already (a local model); choose another --name or pass --force")


def _register(name: str, path: Path, config: SPSRConfig, *, source: str, licence: str, description: str, replace: bool) -> ModelEntry:
    """Write the local registry entry for an already validated file."""
    path = Path(path).resolve()
    entry = ModelEntry(
        name=name, config=config, sha256=sha256_file(path), size=path.stat().st_size,
        source=FileSource(path=str(path)), licence=licence, provenance=source, description=description,
        origin="local",
    )
    add_local_entry(entry, replace=replace)
    return entry


def register_local_model(
    name: str, path: Path, *, source: str, licence: str, description: str = "", replace: bool = False
) -> ModelEntry:
    """Add an existing weights file to ``$SPSR_HOME/weights_manifest.json`` so it loads by name.

    The file is validated strictly first.
    """
    _ensure_name_free(name, replace=replace)
    loaded = read_weights_file(Path(path))
    build_generator(loaded.state_dict, loaded.config)
    return _register(name, path, loaded.config, source=source, licence=licence, description=description, replace=replace)


def import_checkpoint(
    file: Path, *, name: str, source: str | None = None, licence: str = "unknown", replace: bool = False
) -> ModelEntry:
    """Convert any supported checkpoint to safetensors under ``$SPSR_HOME/weights`` and register it.

    The tensors keep their dtype's values (float32 stays float32); the checkpoint is validated
    strictly (by :func:`write_generator_file`, before anything is written), so nothing
    half-matching is ever registered.
    """
    _ensure_name_free(name, replace=replace)
    loaded = read_weights_file(Path(file))
    target = spsr_home() / "weights" / f"{name}.safetensors"
    dtype = next(iter(loaded.state_dict.values())).dtype
    dtype = dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
    write_generator_file(
        target, loaded.state_dict, loaded.config, source=source or f"imported from {Path(file).name}", licence=licence, dtype=dtype
    )
    return _register(
        name, target, loaded.config, source=source or f"imported from {Path(file).resolve()}", licence=licence,
        description="", replace=True,
    )
