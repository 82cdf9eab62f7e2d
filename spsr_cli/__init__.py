"""SPSR x4 super-resolution: library and command-line tool.

>>> from spsr_cli import load_generator
>>> model = load_generator("weights.safetensors")          # doctest: +SKIP
>>> out = model(x)  # x: N x 3 x H x W float in [0, 1]     # doctest: +SKIP
>>> out.sr, out.branch, out.grad_lr                        # doctest: +SKIP
"""

from spsr_cli.model.spsr import SPSRConfig, SPSRNet, SPSROutput
from spsr_cli.weights.loader import load_generator

__version__ = "0.1.0"
__all__ = ["SPSRConfig", "SPSRNet", "SPSROutput", "load_generator", "__version__"]
