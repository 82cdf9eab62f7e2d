"""SPSR x4 super-resolution: library and command-line tool.

>>> from spsr_cli import upscale
>>> big = upscale(PIL.Image.open("photo.png"))             # doctest: +SKIP
>>> big = upscale(array, tile=256, precision="fp32")       # doctest: +SKIP

>>> from spsr_cli import load_generator
>>> model = load_generator("weights.safetensors")          # doctest: +SKIP
>>> out = model(x)  # x: N x 3 x H x W float in [0, 1]     # doctest: +SKIP
>>> out.sr, out.branch, out.grad_lr                        # doctest: +SKIP

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
    "upscale": "spsr_cli.engine.api",
}
__all__ = ["SPSRConfig", "SPSRNet", "SPSROutput", "load_generator", "upscale", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spsr_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
