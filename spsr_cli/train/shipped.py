"""Training configs shipped with spsr-cli: ``spsr train --config spsr-x4-cpu`` names one, a path still works.

The wheel carries the repository's ``configs/*.yaml`` as ``spsr_cli/configs`` (pyproject.toml); in a
source checkout they are read from ``configs/`` beside the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from spsr_cli.errors import UsageError

SUFFIXES = (".yaml", ".yml", ".toml")


def shipped_folder() -> Path:
    """Where the shipped configs are: inside the installed package, else the checkout's ``configs/``."""
    packaged = Path(str(resources.files("spsr_cli") / "configs"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def shipped_configs() -> dict[str, Path]:
    """Every shipped config by name (its file name without the extension)."""
    folder = shipped_folder()
    found = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES) if folder.is_dir() else []
    return {p.stem: p for p in found}


def resolve_config(value: str | Path) -> Path:
    """``--config`` as given: an existing file, else the name of a shipped config (``spsr-x4-cpu`` or
    ``spsr-x4-cpu.yaml``). Raises :class:`UsageError` naming the shipped ones when it is neither."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    name = str(value)
    shipped = shipped_configs()
    if "/" not in name:
        stem = Path(name).stem if Path(name).suffix in SUFFIXES else name
        if stem in shipped:
            return shipped[stem]
    raise UsageError(
        f"--config {name}: no such file, and no shipped config of that name; shipped: {', '.join(shipped) or 'none'} "
        "(`spsr train --config NAME`), or give a .yaml/.toml file"
    )


__all__ = ["resolve_config", "shipped_configs", "shipped_folder"]
