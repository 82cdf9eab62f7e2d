"""``torchrun`` / DistributedDataParallel setup: nccl on CUDA, gloo on CPU.

Single-process runs need nothing: without ``WORLD_SIZE`` in the environment
:func:`setup` returns a one-process context and no process group is created.
Under ``torchrun`` (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT`` set) it joins the group; every process then trains on its own
batches and DDP averages the gradients, so weights stay identical across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from spsr_cli.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def resolve_train_device(spec: str, local_rank: int) -> torch.device:
    """``auto``: CUDA (this process's local GPU) when available, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"train.device={spec!r} but CUDA is not available; use train.device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(device_spec: str = "auto") -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; pick the device."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    device = resolve_train_device(device_spec, local_rank)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world, device=device)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (no-op for single-process runs)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list when not distributed)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks (same keys on every rank)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist()))


def wrap_ddp(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` when distributed, else the module itself."""
    if not ctx.distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
