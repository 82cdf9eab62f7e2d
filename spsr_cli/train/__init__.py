"""Training SPSR generators (config, data, objective, loop, checkpoints, export) and the neural
structure extractors their SPSR-P / SPSR-J losses use (``nse_config``, ``nse_tasks``, ``nse_loop``);
both loops share the run folder (``run_folder``).

>>> from spsr_cli.train import load_config, train          # doctest: +SKIP
>>> result = train(load_config("configs/tiny-cpu.yaml"), "runs/tiny")  # doctest: +SKIP
>>> from spsr_cli.train import load_nse_config, train_nse  # doctest: +SKIP

Imports are lazy so that ``spsr_cli.train.losses`` & co. load without the loop.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "spsr_cli.train.config",
    "default_config": "spsr_cli.train.config",
    "load_config": "spsr_cli.train.config",
    "TrainResult": "spsr_cli.train.loop",
    "train": "spsr_cli.train.loop",
    "export_run": "spsr_cli.train.export",
    "NSETrainConfig": "spsr_cli.train.nse_config",
    "load_nse_config": "spsr_cli.train.nse_config",
    "train_nse": "spsr_cli.train.nse_loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spsr_cli.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
