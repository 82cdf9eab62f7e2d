"""Speed of one generator training step for each ``train.trainable`` set and precision, side by side.

    python benchmarks/bench_train.py                       # full-size SPSR, batch 4, 128 px HR crops
    python benchmarks/bench_train.py --batch 8 --steps 3 --trainable all,branch+fusion

Each case builds the full-size generator (random weights: speed does not depend on them), freezes
what ``train.trainable`` freezes, and times the generator step the training loop runs: forward
(skipping the fusion when only the branch learns and no SR term is used), L1 on the SR image and
on the gradient branch, backward, Adam. Discriminators and the perceptual network are not in it
(their cost does not change with the trainable set). Every case runs in this one process, one
after another, on the same threads. The step's floating-point work is counted once per case with
``torch.utils.flop_counter`` (forward + backward), so the table shows achieved GFLOP/s and its
share of this CPU's measured matrix-multiply peak in the same precision.

The precision path is the training loop's own: bfloat16 autocast + channels_last where
``train.amp=auto`` chooses it (CUDA, or a CPU with AMX / AVX512-BF16), float32 otherwise; the
first line printed says which path this machine takes.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from spsr_cli.engine.device import cpu_flags
from spsr_cli.model.gradient import gradient_map
from spsr_cli.model.spsr import SPSRConfig, SPSRNet, part_of
from spsr_cli.train.config import TRAINABLE
from spsr_cli.train.loop import autocast_context, use_bf16_autocast


def matmul_peak_gflops(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """GFLOP/s of a 2048 x 2048 matrix multiply in ``dtype``: the CPU's practical peak."""
    n = 2048
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def make_step(trainable: str, bf16: bool, *, batch: int, crop: int, scale: int = 4):
    """A closure running one training step of the full-size generator, and the step's FLOPs."""
    torch.manual_seed(0)
    model = SPSRNet(config=SPSRConfig(scale=scale))
    parts = TRAINABLE[trainable]
    for name, p in model.named_parameters():
        p.requires_grad_(part_of(name) in parts)
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    model.to(memory_format=memory_format).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    lr = torch.rand(batch, 3, crop // scale, crop // scale).contiguous(memory_format=memory_format)
    hr = torch.rand(batch, 3, crop, crop).contiguous(memory_format=memory_format)
    device = torch.device("cpu")
    needs_sr = trainable != "branch"  # stage A (branch alone) runs only the branch term, as the loop does

    def step() -> None:
        with autocast_context(device, bf16):
            out = model(lr, fuse=needs_sr)
            loss = F.l1_loss(out.branch, gradient_map(hr, 1))
            if needs_sr:
                loss = loss + F.l1_loss(out.sr, hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    return step, counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128, help="HR crop size in pixels")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--trainable", default=",".join(TRAINABLE), help="comma-separated trainable sets")
    parser.add_argument(
        "--precisions", default="auto,fp32", help="auto (the training loop's choice on this machine) and/or fp32"
    )
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.trainable.split(",") if s.strip()]
    unknown = [s for s in sets if s not in TRAINABLE]
    if unknown:
        parser.error(f"unknown --trainable {unknown}; choose from {', '.join(TRAINABLE)}")
    auto_bf16 = use_bf16_autocast(torch.device("cpu"), "auto")
    flags = cpu_flags()
    units = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "no bf16 units"
    print(
        f"CPU: {torch.get_num_threads()} threads, {units}; train.amp=auto trains in "
        f"{'bfloat16 autocast + channels_last' if auto_bf16 else 'float32'}",
        flush=True,
    )
    precisions = []
    for p in (s.strip() for s in args.precisions.split(",")):
        if p == "auto":
            precisions.append(("bf16" if auto_bf16 else "fp32", auto_bf16))
        elif p == "fp32":
            precisions.append(("fp32", False))
        else:
            parser.error(f"unknown precision {p!r}: use auto and/or fp32")
    precisions = list(dict.fromkeys(precisions))
    peaks = {label: matmul_peak_gflops(torch.bfloat16 if bf16 else torch.float32) for label, bf16 in precisions}
    print("matrix-multiply peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    print("| trainable | precision | batch x crop | s / step | it/s | GFLOP / step | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for label, bf16 in precisions:
        for trainable in sets:
            step, flops = make_step(trainable, bf16, batch=args.batch, crop=args.crop)
            step()  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - start) / args.steps
            gflops = flops / seconds / 1e9
            print(
                f"| {trainable} | {label} | {args.batch} x {args.crop} | {seconds:.2f} | {1 / seconds:.3f} | "
                f"{flops / 1e9:.0f} | {gflops:.0f} | {100 * gflops / peaks[label]:.0f}% |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
