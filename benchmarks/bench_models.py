"""Seconds per output megapixel of registry models side by side: one process, interleaved rounds.

    OMP_NUM_THREADS=2 python benchmarks/bench_models.py spsr-x4 realesr-general-x4v3 dat-light-x4 \\
        --size 128 --rounds 3 --precision fp32

Each model runs through the engine's default path (``Upscaler``, ``--tile auto``, uint8 output) on
the same smooth random ``--size`` x ``--size`` image, once to warm up, then once per round, the
models one after the other within each round. Interleaving makes the ratios robust on a machine
shared with other work (a training run, say), whose load shifts between rounds: every model sees
the same conditions within a round. Prints wall-clock and CPU seconds per output megapixel
(medians over the rounds) and each model's speed-up over the first one, per round and median.
Timings are printed, never asserted; ``--json FILE`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiling import Upscaler
from spsr_cli.weights.loader import load_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registry names or checkpoints; ratios are against the first")
    parser.add_argument("--size", type=int, default=128, help="input edge in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, help="fp32, bf16, fp16 (default: the engine's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backend",
        default="torch",
        help="torch (default), openvino, or auto (which may mix them: a converted model runs in OpenVINO)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rgb = np.random.default_rng(0).random((args.size, args.size, 3), dtype=np.float32)
    options = InferenceOptions(device=args.device, precision=args.precision, backend=args.backend)
    engines = {name: Upscaler(load_generator(name), options) for name in args.models}
    for name, engine in engines.items():
        engine.upscale_array(rgb)  # warm-up: oneDNN plans, allocator
        print(f"{name}: {str(engine.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads", flush=True)
    wall: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(args.rounds):
        for name, engine in engines.items():
            megapixels = (engine.scale * args.size) ** 2 / 1e6
            w0, c0 = time.perf_counter(), time.process_time()
            engine.upscale_array(rgb)
            wall[name].append((time.perf_counter() - w0) / megapixels)
            cpu[name].append((time.process_time() - c0) / megapixels)
        print(f"round {round_}: " + ", ".join(f"{n} {wall[n][-1]:.2f} s/MP" for n in engines), flush=True)
    first = args.models[0]
    results = {}
    for name in engines:
        ratios = [a / b for a, b in zip(wall[first], wall[name])]
        results[name] = {
            "wall_s_per_mp": statistics.median(wall[name]),
            "cpu_s_per_mp": statistics.median(cpu[name]),
            "speedup": statistics.median(ratios),
            "speedup_per_round": ratios,
            "cpu_speedup": statistics.median(a / b for a, b in zip(cpu[first], cpu[name])),
        }
        r = results[name]
        print(
            f"{name}: {r['wall_s_per_mp']:.2f} s / output MP (CPU {r['cpu_s_per_mp']:.2f}); "
            f"{r['speedup']:.1f}x faster than {first} (rounds: {', '.join(f'{x:.1f}' for x in ratios)}; "
            f"CPU time {r['cpu_speedup']:.1f}x)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
