"""SPSR x4 super-resolution: library and command-line tool.

>>> from spsr_cli import upscale
>>> big = upscale(PIL.Image.open("photo.png"))             # doctest: +SKIP
>>> big = upscale(array, tile=256, precision="fp32")       # doctest: +SKIP

>>> from spsr_cli import load_generator, super_resolve
>>> model = load_generator("weights.safetensors")          # doctest: +SKIP
>>> sr = super_resolve(model, x)  # any architecture: x N x 3 x H x W in [0, 1]  # doctest: +SKIP

The names below are imported on first use, so that ``spsr --help`` never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SPSRConfig": "spsr_cli.model.spsr",
    "SPSRNet": "spsr_cli.model.spsr",
    "SPSROutput": "spsr_cli.model.spsr",
    "load_generator": "spsr_cli.weights.loader",
    "super_resolve": "spsr_cli.weights.loader",
    "upscale": "spsr_cli.engine.api",
}
__all__ = ["SPSRConfig", "SPSRNet", "SPSROutput", "load_generator", "super_resolve", "upscale", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spsr_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
