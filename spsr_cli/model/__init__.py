"""The networks: plain ``nn.Module`` architectures, their configs and blocks (no I/O, devices or downloads)."""

from __future__ import annotations

import hashlib
from importlib import resources


def code_sha256() -> str:
    """sha256 of the network code (the ``.py`` files of this package; no torch imported): whatever was
    derived from running it, such as an OpenVINO conversion, holds only for the same code."""
    hasher = hashlib.sha256()
    folder = resources.files(__name__)
    for name in sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".py")):
        hasher.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return hasher.hexdigest()
