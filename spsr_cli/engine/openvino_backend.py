"""The OpenVINO backend: a generator converted once, compiled per patch shape, run on the CPU.

Conversion (the first run of a model on a machine; seconds to a minute): the module's image
output (``Architecture.image`` of its forward) is traced by ``torch.jit.trace`` on a small
example and converted by ``openvino.convert_model`` with a free batch, height and width. The
result is checked at a second, different shape against the torch float32 output; a model whose
trace does not generalise (shape arithmetic baked in as constants) is converted per patch
shape instead. Nothing here names an architecture: whatever PyTorch can trace converts.

Compilation, the cache and inference are :mod:`spsr_cli.engine.openvino_runtime` (no torch there): the
cache folder of a model is named by :func:`conversion_key` of its module (its weights and the network code).

Tensor contract of :meth:`OpenVINOBackend.run`: N x C x h x w float32 CPU tensor in [0, 1] ->
N x C x sh x sw float32 CPU tensor (not clamped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spsr_cli.engine.backends import image_module
from spsr_cli.engine.openvino_runtime import (
    CONVERSION_ERRORS,
    MAGIC,
    MAX_COMPILED_FILES,
    MAX_LIVE,
    CacheDamaged,
    CompiledModels,
    cache_root,
    compile_config,
    import_openvino,
    openvino_version,
    read_container,
    reshape,
    shape_name,
    shared_core,
    write_container,
)
from spsr_cli.errors import BackendError
from spsr_cli.model import code_sha256
from spsr_cli.model.architectures import Generator, architecture_of

log = logging.getLogger(__name__)

#: The shape the converted model is checked at (not the traced one).
CHECK_SHAPE = (40, 24)
#: Least agreement (PSNR in dB of the float32 outputs on a smooth test image) of the converted model
#: with torch at a shape it was not traced at; OpenVINO float32 measures above 110 dB when it generalises.
CHECK_MIN_PSNR = 80.0
#: OpenVINO's precision hint of each torch dtype it runs in.
PRECISION_HINTS = {torch.float32: "f32", torch.bfloat16: "bf16"}


def conversion_key(model: torch.nn.Module) -> str:
    """The cache key of a generator's converted models: sha256 of its weights (architecture, config and
    every state-dict tensor: name, dtype, shape, bytes), whichever file they came from, and of the network
    code they were traced through (:func:`~spsr_cli.model.code_sha256`: a version of spsr-cli whose
    networks compute differently converts again)."""
    hasher = hashlib.sha256(code_sha256().encode())
    config = getattr(model, "config", None)
    hasher.update(str(getattr(config, "architecture", type(model).__name__)).encode())
    to_dict = getattr(config, "to_dict", None)
    hasher.update(json.dumps(to_dict() if callable(to_dict) else None, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return hasher.hexdigest()


def _smooth_image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A smooth random N x C x H x W float32 image in [0, 1] (like a photo: not noise)."""
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    small = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=generator)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


class _TorchConverter:
    """Converts a generator module for :class:`~spsr_cli.engine.openvino_runtime.CompiledModels`."""

    def __init__(self, model: Generator) -> None:
        self._source = model
        self.name = architecture_of(model).name

    def convert(self, shape: tuple[int, ...], dynamic: bool) -> Any:
        ov = import_openvino()
        module = image_module(self._source)
        example = _smooth_image(shape)
        with torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings (sizes that become constants) are what generalises() looks for itself
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # OpenVINO's PyTorch frontend reads traces
            traced = torch.jit.trace(module, example, check_trace=False)
        partial = ov.PartialShape([-1, shape[1], -1, -1] if dynamic else list(shape))
        return ov.convert_model(traced, input=[partial])

    def generalises(self, model: Any, channels: int) -> bool:
        """Float32 OpenVINO against float32 torch at :data:`CHECK_SHAPE` (not the traced shape)."""
        shape = (1, channels, *CHECK_SHAPE)
        try:
            reshape(model, shape)
            compiled = shared_core().compile_model(model, "CPU", compile_config("f32"))
            out = compiled([_smooth_image(shape, seed=1).numpy()])[0]
        except CONVERSION_ERRORS as err:
            log.debug("OpenVINO: the converted model fails at another shape (%s)", err)
            return False
        with torch.inference_mode():
            ref = image_module(self._source)(_smooth_image(shape, seed=1)).numpy()
        agreement = _psnr(out, ref) if out.shape == ref.shape else 0.0
        log.debug("OpenVINO: converted model vs torch at %s: %.1f dB", shape_name(shape), agreement)
        return agreement >= CHECK_MIN_PSNR


class OpenVINOBackend:
    """Runs a generator through OpenVINO on the CPU (see the module docstring).

    Args:
        model: the generator (any architecture); it is read, never modified.
        dtype: torch.bfloat16 or torch.float32 (the compute precision; float16 is refused on CPU
            by :func:`~spsr_cli.engine.device.resolve_dtype` before this).
        cache_dir: where its converted and compiled models go (default: under :func:`cache_root`).
    """

    name = "openvino"

    def __init__(self, model: Generator, dtype: torch.dtype, *, cache_dir: Path | None = None) -> None:
        if dtype not in PRECISION_HINTS:
            raise BackendError(f"the OpenVINO backend runs in bf16 or fp32, not {dtype}; use --backend torch")
        self.device = torch.device("cpu")
        self.dtype = dtype
        self._source = model
        self._sha256: str | None = None
        self._cache_dir = cache_dir
        self._models: CompiledModels | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = conversion_key(self._source)
        return self._sha256

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = cache_root() / self.sha256
        return self._cache_dir

    @property
    def models(self) -> CompiledModels:
        """The model's converted and compiled models (its cache folder)."""
        if self._models is None:
            self._models = CompiledModels(self.cache_dir, _TorchConverter(self._source))
        return self._models

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent converting, compiling and loading from the cache (for reports and benchmarks)."""
        return self.models.timings

    def is_converted(self) -> bool:
        """Whether running needs no conversion: converted in this process or cached on disk."""
        return self.models.is_converted()

    def run(self, patch: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = self.dtype if dtype is None else dtype
        x = patch.detach().to("cpu", torch.float32).numpy()
        return torch.from_numpy(self.models.infer(x, PRECISION_HINTS[dtype]))

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """Start OpenVINO and convert the model if no run on this machine has (both one-off costs).
        Nothing is compiled: a compiled shape that no image uses would only cost time and memory."""
        shared_core()
        if not self.is_converted():
            self.models.dynamic_model(int(shape[1]))

    def describe(self) -> str:
        return f"openvino {openvino_version().split('-')[0]} on the CPU, {PRECISION_HINTS[self.dtype]}"


__all__ = [  # the cache's names are openvino_runtime's, available here too
    "MAGIC",
    "MAX_COMPILED_FILES",
    "MAX_LIVE",
    "CacheDamaged",
    "OpenVINOBackend",
    "cache_root",
    "read_container",
    "conversion_key",
    "write_container",
]
