"""NSE (neural structure extractor) weight files, and finding them by name.

NSE weight files are float32 safetensors with string metadata ``format`` ("spsr-cli"),
``architecture`` ("nse"), ``config`` (JSON of :class:`NSEConfig`), ``method``
("contrastive" or "jigsaw"), ``evaluation`` (JSON: held-out accuracy) and provenance.
``loss.nse`` names one: a path to such a file, or a name from the packaged manifest's
``auxiliary`` list (kind ``structure-extractor``, bundled, sha256-checked) or from the
local registry's (``spsr train export`` of an NSE run). Entries keep the file's sha256 in
their ``source``, as the other auxiliary entries do.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Mapping, Union

import torch

from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError, UnknownModelError
from spsr_cli.files import read_safetensors, save_safetensors_atomic, sha256_file
from spsr_cli.model.nse import NSEConfig, NSENet
from spsr_cli.weights.manifest import AuxiliaryEntry, load_manifest
from spsr_cli.weights.store import FORMAT_TAG

ARCHITECTURE = "nse"
AUX_KIND = "structure-extractor"


def write_nse_file(path: Path, model: NSENet, *, metadata: Mapping[str, str]) -> str:
    """Write ``model`` as float32 safetensors with its config in the metadata, atomically.

    Returns the file's sha256.
    """
    tensors = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT_TAG,
        "architecture": ARCHITECTURE,
        "config": json.dumps(model.config.to_dict()),
        "dtype": "float32",
        **dict(metadata),
    }
    return sha256_file(save_safetensors_atomic(Path(path), tensors, meta))


def read_nse_file(path: Union[str, Path]) -> tuple[NSENet, dict[str, str]]:
    """Build the NSE stored in ``path`` (strict load, float32, eval mode) and return its metadata."""
    path = Path(path)
    try:
        tensors, metadata = read_safetensors(path)
    except ValueError as err:
        raise CheckpointMismatchError(str(err)) from None
    if metadata.get("architecture") != ARCHITECTURE or "config" not in metadata:
        raise CheckpointMismatchError(
            f"{path} is not an NSE weights file (architecture {metadata.get('architecture')!r}); "
            "export one with `spsr train export RUN --name NAME` from an `spsr train nse` run"
        )
    try:
        model = NSENet(NSEConfig.from_dict(json.loads(metadata["config"])))
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointMismatchError(f"{path}: its tensors do not match its stored NSE config ({err})") from None
    return model.eval(), metadata


def nse_entries() -> dict[str, tuple[AuxiliaryEntry, Path]]:
    """Known NSEs: packaged (bundled) first, then the local registry's; name -> (entry, file)."""
    found: dict[str, tuple[AuxiliaryEntry, Path]] = {}
    for name, entry in load_manifest().auxiliary_of_kind(AUX_KIND).items():
        kind = entry.source.get("type")
        if entry.origin == "packaged" and kind == "bundled":
            found[name] = (entry, Path(str(resources.files("spsr_cli") / entry.source["path"])))
        elif entry.origin == "local":
            found[name] = (entry, Path(entry.source["path"]))
    return found


def resolve_nse(spec: str) -> Path:
    """``loss.nse`` -> a verified NSE weights file: an existing path, or a registered name."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    entries = nse_entries()
    if spec not in entries:
        raise UnknownModelError(
            f"loss.nse {spec!r} is neither a file nor a known structure extractor "
            f"(known: {', '.join(sorted(entries)) or 'none'}); train one with `spsr train nse` and export it"
        )
    entry, file = entries[spec]
    if not file.is_file():
        raise UnknownModelError(f"structure extractor {spec!r}: its file {file} is missing; reinstall or re-export it")
    expected = str(entry.source.get("sha256") or "").lower()
    actual = sha256_file(file)
    if expected != actual:
        raise ChecksumMismatchError(
            f"structure extractor {spec!r}: {file} has sha256 {actual}, the registry says {expected or 'nothing'}; "
            "the file is damaged or was replaced: reinstall or re-export it"
        )
    return file


def load_nse(spec: str) -> tuple[NSENet, dict[str, str]]:
    """The NSE that ``loss.nse`` names (see :func:`resolve_nse`), in eval mode."""
    return read_nse_file(resolve_nse(spec))


__all__ = ["ARCHITECTURE", "AUX_KIND", "load_nse", "nse_entries", "read_nse_file", "resolve_nse", "write_nse_file"]
