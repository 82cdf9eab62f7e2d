"""Tiled against whole-image output of a model on a real photo: how visible the seams are.

    python benchmarks/bench_seams.py dat-light-x4 ../shared/data/bench/Set14/HR/img_001.png \\
        --size 256 --cases 96:16 96:32 96:0 64:16

For each ``TILE:OVERLAP`` case the middle ``--size`` x ``--size`` crop of the image is upscaled
whole and through the engine with that tile and ``--tile-overlap`` (float32, CPU), twice: with the
patches on the model's grid (``config.tile_align``, as the engine runs it) and, for grid-aligned
models, with patches anywhere (``align`` forced to 1, as before the grid existed). Prints the PSNR
of the tiled output against the whole-image output (float, [0, 1]) and the CPU seconds of each run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiling import Upscaler
from spsr_cli.eval.datasets import read_rgb
from spsr_cli.weights.loader import load_generator


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="registry name or checkpoint")
    parser.add_argument("image", help="a photo (its middle crop is the input)")
    parser.add_argument("--size", type=int, default=256, help="input crop edge in pixels")
    parser.add_argument("--cases", nargs="+", default=["96:16", "96:32"], help="TILE:OVERLAP pairs")
    args = parser.parse_args()
    model = load_generator(args.model)
    image = read_rgb(args.image)
    y0, x0 = (image.shape[0] - args.size) // 2, (image.shape[1] - args.size) // 2
    rgb = image[y0 : y0 + args.size, x0 : x0 + args.size].astype(np.float32) / 255.0
    options = InferenceOptions(device="cpu", precision="fp32", tile=0)
    start = time.process_time()
    whole = Upscaler(model, options).upscale_array(rgb, dtype=np.float32)
    print(f"{args.model}, {args.size} x {args.size} crop: whole image {time.process_time() - start:.1f} s CPU")
    for case in args.cases:
        tile, overlap = (int(v) for v in case.split(":"))
        for anywhere in (False, True):
            upscaler = Upscaler(
                model, InferenceOptions(device="cpu", precision="fp32", tile=tile, tile_overlap=overlap)
            )
            if anywhere:
                if upscaler.align == 1:
                    continue
                upscaler.align = 1
            start = time.process_time()
            tiled = upscaler.upscale_array(rgb, dtype=np.float32)
            where = "anywhere" if anywhere else f"on the {upscaler.align}-pixel grid"
            print(
                f"tile {tile}, overlap {overlap}, patches {where}: {psnr(tiled, whole):.2f} dB "
                f"({time.process_time() - start:.1f} s CPU)",
                flush=True,
            )


if __name__ == "__main__":
    main()
