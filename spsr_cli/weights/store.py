"""Reading and writing generator weight files, and importing them into the local registry.

Our files are safetensors with string metadata: ``format`` ("spsr-cli"), ``architecture``
("spsr", "rrdbnet", "srvgg", "dat"), ``config`` (JSON of that architecture's config:
:class:`SPSRConfig`, :class:`RRDBNetConfig`, ...), ``scale``, ``source`` and ``licence``. Foreign
files (published SPSR, ESRGAN, BasicSR, Real-ESRGAN, DAT ``.pth``/``.safetensors``) are recognised by their keys
(:func:`spsr_cli.weights.layouts.normalize_generator`). ``.pth`` files are read with
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from spsr_cli.errors import (
    CheckpointMismatchError,
    ChecksumMismatchError,
    NameTakenError,
    UnknownModelError,
    WeightsNotAvailableError,
)
from spsr_cli.files import read_safetensors, save_safetensors_atomic, sha256_file
from spsr_cli.model.architectures import AnyConfig, Generator, GeneratorConfig, config_from_dict
from spsr_cli.weights.layouts import StateDict, build_generator, normalize_generator
from spsr_cli.weights.manifest import (
    FileSource,
    ModelEntry,
    add_local_entry,
    home_folder,
    load_manifest,
    validate_name,
    writable_folder,
)

#: ``format`` metadata of every safetensors file spsr-cli writes (generators and NSEs alike).
FORMAT_TAG = "spsr-cli"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", re.S)


@dataclass(frozen=True)
class LoadedWeights:
    """A state dict under our key names with the config it belongs to and the file's metadata."""

    state_dict: StateDict
    config: AnyConfig
    metadata: dict[str, str]

    @property
    def architecture(self) -> str:
        return self.config.architecture


def torch_load_refusal(path: Path, err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, without torch's advice to disable
    ``weights_only`` (which would let the file run arbitrary code: never suggested)."""
    text = str(err)
    found = _UNSUPPORTED_GLOBAL.search(text)
    if found:
        return (
            f"{path} holds Python objects other than tensors ({found.group(1)}); it is refused because unpickling "
            "them could run code. Save a plain state dict (name -> tensor) or safetensors where it was made"
        )
    detail = _UNPICKLER_DETAIL.search(text)
    if detail:
        reason = " ".join(detail.group(1).split())
    else:
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if not reason or "weights_only" in reason:
            reason = type(err).__name__
    return f"{path} is not a readable PyTorch checkpoint ({reason})"


def check_readable(path: Path) -> None:
    """Raise :class:`WeightsNotAvailableError` naming the OS's reason when ``path`` cannot be opened."""
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise WeightsNotAvailableError(
            f"cannot read the weights file {path}: {err.strerror or err}; check its permissions"
        ) from None


def check_finite(state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or Inf (they give black images), naming the first such tensor."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointMismatchError(
                f"{where}: tensor {key!r} holds {bad} NaN/Inf value(s) of {tensor.numel()}; these weights are "
                "broken (a diverged training run?): use another checkpoint"
            )


def _training_checkpoint_hint(raw: object, path: Path) -> None:
    if isinstance(raw, Mapping) and "format_version" in raw and "step" in raw and ("ema" in raw or "model" in raw):
        raise UnknownModelError(
            f"{path} is a training checkpoint (step {raw.get('step')}), not a generator weights file; "
            f"export it first with `spsr train export {path} --name NAME` and use --model NAME"
        )


def read_tensor_file(path: Path) -> tuple[object, dict[str, str]]:
    """(contents, metadata) of a ``.safetensors`` file (name -> tensor, its metadata) or a ``.pth``-style
    file (whatever ``torch.load(weights_only=True)`` gives, no metadata): the one place weight files are read.

    Raises :class:`CheckpointMismatchError` for an unreadable file (never suggesting to unpickle
    arbitrary objects) and :class:`UnknownModelError` for another extension.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            return read_safetensors(path)
        except ValueError as err:
            raise CheckpointMismatchError(str(err)) from None
    if suffix in TORCH_SUFFIXES:
        try:
            return torch.load(path, map_location="cpu", weights_only=True), {}
        except Exception as err:  # torch raises many types (UnpicklingError, RuntimeError, ...)
            raise CheckpointMismatchError(torch_load_refusal(path, err)) from None
    raise UnknownModelError(f"{path}: unsupported checkpoint extension {suffix!r}; use .safetensors or .pth")


def read_weights_file(path: Path) -> LoadedWeights:
    """Read a .safetensors or .pth generator checkpoint into the canonical layout (not yet loaded).

    Refuses unreadable files, training checkpoints (with the export command to use) and
    weights holding NaN/Inf (naming the tensor).
    """
    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:  # e.g. a folder on the way that we may not enter
        raise WeightsNotAvailableError(
            f"cannot read the weights file {path}: {err.strerror or err}; check its permissions"
        ) from None
    if is_dir:
        raise UnknownModelError(
            f"{path} is a folder, not a weights file; if it is a training run, export it with "
            f"`spsr train export {path} --name NAME` and use --model NAME"
        )
    if not is_file:
        raise UnknownModelError(f"checkpoint file {path} does not exist")
    check_readable(path)
    raw, metadata = read_tensor_file(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        _training_checkpoint_hint(raw, path)
    stored = metadata.get("architecture") if metadata.get("format") == FORMAT_TAG else None
    architecture, state_dict, config = normalize_generator(raw, stored)
    check_finite(state_dict, str(path))
    if "config" in metadata:
        try:
            stored = config_from_dict(architecture, json.loads(metadata["config"]))
        except (ValueError, TypeError) as err:
            raise CheckpointMismatchError(f"{path}: its stored config is invalid ({err})") from None
        check_stored_config(stored, config, str(path))
        config = stored
    return LoadedWeights(state_dict=state_dict, config=config, metadata=metadata)


def check_stored_config(stored: AnyConfig, inferred: AnyConfig, where: str) -> None:
    """Refuse a stored config that disagrees with what the tensors' shapes say (``inferred``), before any
    network is built from it: a config claiming nf = 10**9 or nb = 3000 would otherwise allocate
    gigabytes, or build for minutes, before the shapes are compared. The fields compared are the
    config type's ``shape_fields`` (none declared: nothing is compared here; the strict load still is)."""
    fixed = getattr(type(inferred), "shape_fields", ()) if type(stored) is type(inferred) else ()
    wrong = [
        f"{name}={getattr(stored, name)} (its tensors say {getattr(inferred, name)})"
        for name in fixed
        if getattr(stored, name) != getattr(inferred, name)
    ]
    if wrong:
        raise CheckpointMismatchError(
            f"{where}: its stored config does not match its tensors: {', '.join(wrong)}; nothing was built. "
            "The file is damaged or its metadata was edited: export or import the weights again"
        )


def load_weights_file(path: Path) -> Generator:
    """Build the generator stored in ``path`` (strict; float32; train mode)."""
    loaded = read_weights_file(path)
    return build_generator(loaded.state_dict, loaded.config)


def write_generator_file(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: GeneratorConfig,
    *,
    source: str,
    licence: str,
    dtype: torch.dtype = torch.float16,
    extra_metadata: Mapping[str, str] | None = None,
) -> str:
    """Write a state dict (our key names) as safetensors with metadata, atomically; return its sha256.

    The state dict is validated strictly against ``config`` (of any architecture) first.
    """
    build_generator(state_dict, config)  # refuses mismatches before anything is written
    check_finite(state_dict, f"weights for {path}")
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": FORMAT_TAG,
        "architecture": config.architecture,
        "config": json.dumps(config.to_dict()),
        "scale": str(config.scale),
        "source": source,
        "licence": licence,
        "dtype": str(dtype).removeprefix("torch."),
        **dict(extra_metadata or {}),
    }
    return sha256_file(save_safetensors_atomic(Path(path), tensors, metadata))


#: Names --model gives a meaning of its own: never names of imported or trained models.
RESERVED_NAMES = {
    "auto": "--model auto (a model picked per photo)",
    "bicubic": "the bicubic baseline of `spsr eval` and `spsr compare`",
}


def write_converted_generator(
    target: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: GeneratorConfig,
    *,
    name: str,
    sha256: str,
    source: str,
    licence: str,
    notice: str,
    dtype: torch.dtype,
) -> Path:
    """Write a registry model converted from a foreign file to ``target``, only if it matches its pin.

    The file is staged beside ``target`` (same metadata as :func:`write_generator_file`, plus
    ``notice`` and ``name``) and moved into place only when its sha256 is ``sha256``; otherwise
    :class:`ChecksumMismatchError` is raised and nothing is kept.
    """
    target = Path(target)
    with tempfile.TemporaryDirectory(dir=writable_folder(target.parent), prefix=".convert-") as tmp:
        staged = Path(tmp) / target.name
        sha = write_generator_file(
            staged,
            state_dict,
            config,
            source=source,
            licence=licence,
            dtype=dtype,
            extra_metadata={"notice": notice, "name": name},
        )
        if sha != sha256:
            raise ChecksumMismatchError(
                f"model {name!r}: the converted file has sha256 {sha}, the registry pins {sha256}; "
                "nothing was kept (this spsr-cli converts differently from the one that pinned it: report it)"
            )
        staged.replace(target)
    return target


def _ensure_name_free(name: str, *, replace: bool) -> None:
    """Refuse a name already in the registry (a released one always; a local one unless ``replace``)."""
    validate_name(name)
    manifest = load_manifest()
    if name in RESERVED_NAMES or name in manifest.auxiliary or name in manifest.local_auxiliary:
        what = RESERVED_NAMES.get(name, "auxiliary weights (`spsr weights list`)")
        raise NameTakenError(f"--name {name!r} already means {what}; choose another --name")
    existing = manifest.models.get(name)
    if existing is None or (existing.origin == "local" and replace):
        return
    if existing.origin == "packaged":
        raise NameTakenError(f"a model named {name!r} exists already (a released model); choose another --name")
    raise NameTakenError(
        f"a model named {name!r} exists already (a local model); choose another --name or pass --force"
    )


def _register(
    name: str, path: Path, config: AnyConfig, *, source: str, licence: str, description: str, replace: bool
) -> ModelEntry:
    """Write the local registry entry for an already validated file."""
    path = Path(path).resolve()
    entry = ModelEntry(
        name=name,
        config=config,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        source=FileSource(path=str(path)),
        licence=licence,
        provenance=source,
        description=description,
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
    return _register(
        name, path, loaded.config, source=source, licence=licence, description=description, replace=replace
    )


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
    target = home_folder("weights") / f"{name}.safetensors"
    dtype = next(iter(loaded.state_dict.values())).dtype
    dtype = dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
    write_generator_file(
        target,
        loaded.state_dict,
        loaded.config,
        source=source or f"imported from {Path(file).name}",
        licence=licence,
        dtype=dtype,
    )
    return _register(
        name,
        target,
        loaded.config,
        source=source or f"imported from {Path(file).resolve()}",
        licence=licence,
        description="",
        replace=True,
    )
