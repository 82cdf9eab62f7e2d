"""Throughput and peak memory of the tiled engine vs a plain whole-image float32 forward.

    python benchmarks/bench_upscale.py                     # CPU, and CUDA when present
    python benchmarks/bench_upscale.py --size 128 --repeat 3 --devices cpu

Each measurement runs in its own process so peak-memory figures do not mix. Weights
are random (speed does not depend on their values); the architecture is the full
SPSR x4 generator unless --tiny is given. Output: one line per case, and --json FILE.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _case(kind: str, device: str, size: int, repeat: int, tiny: bool, tile: str, queue: mp.Queue) -> None:
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.model.spsr import SPSRConfig, SPSRNet

    torch.manual_seed(0)
    config = SPSRConfig(nf=8, nb=2, gc=4) if tiny else SPSRConfig()
    model = SPSRNet(config=config).eval().requires_grad_(False)
    x = torch.rand(1, 3, size, size)
    cuda = device.startswith("cuda")
    if kind == "engine":
        upscaler = Upscaler(model, InferenceOptions(device=device, tile=tile if tile == "auto" else int(tile)))
        run = lambda: upscaler.upscale(x)  # noqa: E731
        precision = str(upscaler.dtype).removeprefix("torch.")
        tile_used = upscaler.tile
    else:  # baseline: whole image, float32, no tiling, result back on the CPU
        model = model.to(device)

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return model(x.to(device)).sr.cpu()

        precision, tile_used = "float32", None
    rss_before = _rss_bytes()  # model and input loaded; the peak counts everything the run adds
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run()  # warm-up (cuDNN autotune, allocator)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeat
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    out_mp = (size * config.scale) ** 2 / 1e6
    queue.put(dict(case=kind, device=device, precision=precision, tile=tile_used, input=size, seconds=seconds,
                   output_mp_per_s=out_mp / seconds, peak_mib=max(peak, 0) / 2**20, threads=torch.get_num_threads()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input edge in pixels (output is 4x)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--tile", default="auto", help="engine tile: auto or a pixel count")
    parser.add_argument("--tiny", action="store_true", help="tiny generator (smoke test of this script)")
    parser.add_argument("--json", default=None, help="write results to this file")
    args = parser.parse_args()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ctx = mp.get_context("spawn")
    results = []
    for device in devices:
        for kind in ("baseline", "engine"):
            queue: mp.Queue = ctx.Queue()
            proc = ctx.Process(target=_case, args=(kind, device, args.size, args.repeat, args.tiny, args.tile, queue))
            proc.start()
            result = queue.get()
            proc.join()
            results.append(result)
            print(
                f"{result['device']:>6} {result['case']:>8} {result['precision']:>8} tile={result['tile']}: "
                f"{result['output_mp_per_s']:.4f} output MP/s, {result['seconds']:.2f} s/image, peak {result['peak_mib']:.0f} MiB"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
