"""Device and precision choice (the only place that decides where models run).

Importing this module does not import torch: the processor's flags and the free memory are read without
it (:mod:`spsr_cli.engine.fast_start` runs cached OpenVINO models without torch); resolving a device or a
dtype imports it.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from spsr_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

#: ``--precision`` names and the dtypes' names in torch.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


#: /proc/cpuinfo flags of bfloat16 matrix units (Intel AMX, AVX512-BF16).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
#: Per backend, the /proc/cpuinfo flags under which its bfloat16 is faster than its float32 (so the
#: default). Measured (README, "Backends"): with AMX both are several times faster; with AVX512-BF16 but
#: no AMX, upscaling with spsr-x4 (2 threads, in one process) ran 1.9x faster in OpenVINO bf16 than in its
#: fp32 and 1.5x faster in torch bf16 than in torch fp32 (though torch's bf16 matrix multiply and training
#: step are slower than fp32 there). One entry per backend, so that one can change without the other.
CPU_BF16_FASTER: dict[str, tuple[str, ...]] = {
    "torch": ("amx_bf16", "avx512_bf16"),
    "openvino": ("amx_bf16", "avx512_bf16"),
}


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The processor's feature flags from ``cpuinfo`` (Linux), read once; empty elsewhere."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the processor has bfloat16 matrix units (AMX or AVX512-BF16).

    There bfloat16 convolutions run several times faster than float32.
    ``SPSR_CPU_BF16=0|1`` overrides the detection (e.g. to compare both paths).
    """
    override = os.environ.get("SPSR_CPU_BF16")
    if override in ("0", "1"):
        return override == "1"
    return any(flag in cpu_flags(cpuinfo) for flag in BF16_CPU_FLAGS)


def cpu_bf16_faster(backend: str = "torch", cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when ``backend`` (``torch`` or ``openvino``) runs faster in bfloat16 than in float32 on this
    processor (:data:`CPU_BF16_FASTER`). ``SPSR_CPU_BF16=0|1`` overrides the detection, as for
    :func:`cpu_has_bf16_units`."""
    override = os.environ.get("SPSR_CPU_BF16")
    if override in ("0", "1"):
        return override == "1"
    return any(flag in cpu_flags(cpuinfo) for flag in CPU_BF16_FASTER.get(backend, ()))


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> an available :class:`torch.device`.

    Under ``torchrun`` (``LOCAL_RANK`` set), ``auto`` and ``cuda`` pick ``cuda:LOCAL_RANK``.
    """
    import torch

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
        raise UsageError(
            f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present "
            f"(0..{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def resolve_dtype(device: torch.device, precision: str | None, backend: str = "torch") -> torch.dtype:
    """The compute dtype for ``device`` and ``backend`` (``torch`` or ``openvino``).

    ``None`` (the default) is the fastest accurate choice: float16 on CUDA; on CPU bfloat16
    where it is faster than float32 for that backend (:func:`cpu_bf16_faster`: measured faster for
    both with AMX or AVX512-BF16) and float32 elsewhere; float32 on MPS. ``fp32`` is
    always available. float16 is refused on CPU (slow, and no faster than bfloat16 where it exists).
    """
    import torch

    if device.type == "cpu":
        return getattr(torch, cpu_precision(precision, backend))
    if precision is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not understood; use fp32, fp16 or bf16")
    return getattr(torch, PRECISIONS[precision])


def cpu_precision(precision: str | None, backend: str = "torch") -> str:
    """:func:`resolve_dtype` on the CPU without torch: the dtype's name in torch (``bfloat16`` or ``float32``)."""
    if precision is None:
        return "bfloat16" if cpu_bf16_faster(backend) else "float32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not understood; use fp32, fp16 or bf16")
    if precision == "fp16":
        raise UsageError("--precision fp16 is not used on CPU (slow there); use bf16, fp32 or a GPU")
    return PRECISIONS[precision]


def gpu_possible() -> bool:
    """Whether ``--device auto`` could find a GPU here, judged without importing torch: False only on
    Linux without the device files that CUDA (``/dev/nvidiactl``), ROCm (``/dev/kfd``) and WSL's GPU
    (``/dev/dxg``) need; True elsewhere (macOS may have MPS), so that callers then ask torch."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(name).exists() for name in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def use_channels_last(device: torch.device) -> bool:
    """Whether models and inputs on ``device`` run in channels_last memory format (faster convolutions)."""
    return device.type in ("cpu", "cuda")


def free_memory_bytes(device: torch.device) -> int:
    """Memory that can still be allocated on ``device``, in bytes.

    CUDA: free VRAM plus what torch's caching allocator holds unused (it serves our next
    allocations). CPU (and MPS, which shares system memory): ``MemAvailable`` of
    ``/proc/meminfo`` (free memory plus reclaimable caches), lowered to the headroom of a
    cgroup memory limit when one applies; elsewhere the free pages, or 4 GiB if unknown.
    """
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    return host_free_bytes()


def host_free_bytes() -> int:
    """System memory that can still be allocated, in bytes (:func:`free_memory_bytes` of the CPU)."""
    available = _meminfo_available()
    if available is None:
        try:
            available = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            available = 4 << 30
    headroom = _cgroup_headroom()
    return available if headroom is None else min(available, headroom)


def _meminfo_available(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        text = Path(meminfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _cgroup_headroom(root: str = "/sys/fs/cgroup") -> int | None:
    """Limit minus usage of this process's cgroup (v2, then v1), or None without a limit."""
    for limit_name, usage_name in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(root, limit_name).read_text().strip()
            usage = Path(root, usage_name).read_text().strip()
        except OSError:
            continue
        if not limit.isdigit() or not usage.isdigit() or int(limit) >= 1 << 60:
            return None  # "max" or the v1 "unlimited" sentinel
        stat_name = str(Path(limit_name).parent / "memory.stat").removeprefix("./")
        try:  # the page cache counts as usage but is given back on demand
            stat = Path(root, stat_name).read_text()
        except OSError:
            stat = ""
        match = re.search(r"^(?:total_)?inactive_file (\d+)$", stat, re.MULTILINE)
        reclaimable = int(match.group(1)) if match else 0
        return max(0, int(limit) - int(usage) + reclaimable)
    return None
