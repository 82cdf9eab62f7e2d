"""Backends: what runs a network's forward pass on a patch, behind one small interface.

The tiler (:class:`~spsr_cli.engine.tiling.Upscaler`), the memory planner, the batch runner and
the writers hand a backend float32 patches and get the super-resolved image back; they never
know which backend it is. Two exist:

* ``torch``: PyTorch eager on any device (CPU, CUDA, MPS), optionally through ``torch.compile``;
  the only one for training and GPUs.
* ``openvino``: the network converted once by OpenVINO (cached under ``$SPSR_HOME``, see
  :mod:`spsr_cli.engine.openvino_backend`) and compiled per patch shape; CPU only. An optional
  dependency: ``pip install "spsr-cli[openvino]"``.

``--backend auto`` (the command line's and :func:`spsr_cli.upscale`'s default) takes OpenVINO on
the CPU where it is installed (measured faster there: README, "Backends"), torch elsewhere; see
:func:`resolve_backend` and :meth:`~spsr_cli.engine.tiling.Upscaler.backend_for`.

A backend needs nothing of an architecture but its module and the registry's ``image`` function
(forward output -> the image), so every architecture that PyTorch can trace converts.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Literal, Protocol

import torch

from spsr_cli.engine import openvino_runtime
from spsr_cli.engine.device import use_channels_last
from spsr_cli.errors import UsageError
from spsr_cli.model.architectures import Generator, architecture_of

log = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
#: What to install for the OpenVINO backend.
OPENVINO_INSTALL = 'pip install "spsr-cli[openvino]"'


class Backend(Protocol):
    """Runs one generator on patches.

    Attributes:
        name: ``torch`` or ``openvino`` (reported in ``-v``, ``--json`` and eval provenance).
        device: where the result tensors are.
        dtype: the compute precision (float32, float16 or bfloat16).
    """

    name: str
    device: torch.device
    dtype: torch.dtype

    def run(self, patch: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """N x C x h x w float32 CPU patch in [0, 1] (any strides) -> N x C x sh x sw float image on
        :attr:`device`, computed in ``dtype`` (default :attr:`dtype`), not clamped, maybe not finite."""
        ...

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """Pay this backend's one-off costs (library start-up, kernel selection, memory pools, a
        conversion) before the first image, for patches of ``shape`` (N x C x h x w)."""
        ...

    def describe(self) -> str:
        """One line for logs: backend, precision and what it runs on."""
        ...


def resolve_backend(name: str, device: torch.device, *, compile: bool = False) -> str:
    """``auto`` | ``torch`` | ``openvino`` -> the backend to use on ``device`` (``auto`` is kept when
    OpenVINO is a candidate: the upscaler then decides per image, see ``Upscaler.backend_for``).

    ``auto`` is ``torch`` off the CPU, with ``compile`` (``--compile`` is torch's), and where OpenVINO
    is not installed. ``openvino`` off the CPU, with ``compile`` or without the package is a
    :class:`UsageError` naming the fix.
    """
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise UsageError(f"--backend {name!r} is not understood; use {', '.join(BACKENDS)}")
    if name == "torch":
        return name
    usable = device.type == "cpu" and not compile and openvino_runtime.openvino_installed()
    if name == "auto":
        return "auto" if usable else "torch"
    if device.type != "cpu":
        raise UsageError(f"--backend openvino runs on the CPU, not on {device}; use --device cpu or --backend torch")
    if compile:
        raise UsageError("--compile is torch.compile: use it with --backend torch, or drop it for --backend openvino")
    if not openvino_runtime.openvino_installed():
        raise UsageError(f"--backend openvino needs the openvino package: {OPENVINO_INSTALL} (or use --backend torch)")
    return name


class TorchBackend:
    """PyTorch eager (or ``torch.compile``) on ``device`` in ``dtype``; channels_last on CPU and CUDA.

    The caller's module is never modified: a copy is made for the device, dtype and memory
    format when they differ from the module's own. A float32 copy for recomputing overflowed
    tiles is made on first use.
    """

    name = "torch"

    def __init__(self, model: Generator, device: torch.device, dtype: torch.dtype, *, compile: bool = False) -> None:
        self.device = device
        self.dtype = dtype
        self.channels_last = use_channels_last(device)
        self._source = model
        self._image = architecture_of(model).image  # forward output -> the SR image
        self.model: torch.nn.Module = self._prepared(dtype)
        if compile:
            self.model = torch.compile(self.model)
        self._fp32: torch.nn.Module | None = self.model if dtype == torch.float32 else None

    def _prepared(self, dtype: torch.dtype) -> torch.nn.Module:
        param = next(self._source.parameters())
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if (
            param.device == self.device
            and param.dtype == dtype
            and not self._source.training
            and (not self.channels_last or param.dim() != 4 or param.is_contiguous(memory_format=memory_format))
        ):
            return self._source
        model = copy.deepcopy(self._source).to(self.device, dtype).eval()
        return model.to(memory_format=memory_format)

    def run(self, patch: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = self.dtype if dtype is None else dtype
        if dtype == self.dtype:
            model = self.model
        else:
            if dtype != torch.float32:
                raise ValueError(f"the torch backend runs in {self.dtype} or float32, not {dtype}")
            if self._fp32 is None:
                self._fp32 = self._prepared(torch.float32)
            model = self._fp32
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return self._image(model(patch.to(self.device, dtype, memory_format=memory_format)))

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """One pass on a random patch of ``shape``: eager PyTorch's one-off costs come with its first pass."""
        with torch.inference_mode():
            self.run(torch.rand(shape, generator=torch.Generator().manual_seed(0)))

    def describe(self) -> str:
        return f"torch on {self.device}, {str(self.dtype).removeprefix('torch.')}"


class _ImageOutput(torch.nn.Module):
    """The generator with its forward reduced to the SR image (what is converted)."""

    def __init__(self, net: torch.nn.Module, image: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._image = image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._image(self.net(x))


def image_module(model: Generator) -> torch.nn.Module:
    """``model`` as a float32 eval module returning only the N x C x sH x sW image (for tracing and export);
    ``model`` itself is wrapped when it is float32 on the CPU in eval mode, else a float32 copy."""
    param = next(model.parameters())
    net = model
    if param.dtype != torch.float32 or param.device.type != "cpu" or model.training:
        net = copy.deepcopy(model).to("cpu", torch.float32).eval()
    return _ImageOutput(net, architecture_of(model).image).eval()


def make_backend(name: str, model: Generator, device: torch.device, dtype: torch.dtype, *, compile: bool = False):
    """The backend ``name`` (``torch`` or ``openvino``, as resolved) for ``model``."""
    if name == "torch":
        return TorchBackend(model, device, dtype, compile=compile)
    if name == "openvino":
        from spsr_cli.engine.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(model, dtype)
    raise ValueError(f"no backend called {name!r}")


__all__ = [
    "BACKENDS",
    "OPENVINO_INSTALL",
    "Backend",
    "BackendName",
    "TorchBackend",
    "image_module",
    "make_backend",
    "resolve_backend",
]
