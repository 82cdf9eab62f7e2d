"""Device and precision choice (the only place that decides where models run)."""

from __future__ import annotations

import os
import re

import torch

from spsr_cli.errors import UsageError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> an available :class:`torch.device`.

    Under ``torchrun`` (``LOCAL_RANK`` set), ``auto`` and ``cuda`` pick ``cuda:LOCAL_RANK``.
    """
    spec = spec.strip().lower()
    local_rank = os.environ.get("LOCAL_RANK")
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UsageError("--device mps: Apple MPS is not available on this machine; use --device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise UsageError(f"--device {spec!r} is not understood; use auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else int(local_rank or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present (0..{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def resolve_dtype(device: torch.device, precision: str | None) -> torch.dtype:
    """``None`` -> float16 on CUDA, float32 elsewhere. Half precision is refused on CPU."""
    if precision is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise UsageError(f"--precision {precision!r} is not understood; use fp32, fp16 or bf16")
    dtype = _DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32:
        raise UsageError(f"--precision {precision} is not used on CPU (slow and inaccurate there); use fp32 or a GPU")
    return dtype


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: free VRAM; otherwise available system RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30
