"""Would int8 (OpenVINO post-training quantisation through NNCF) keep the default model's quality?

The issue's bar for ``--precision int8``: Set14 LPIPS within 0.003 and PSNR within 0.2 dB of the
float model. This study measures it; nothing in ``spsr_cli`` depends on NNCF.

    pip install nncf==3.4.0
    python benchmarks/study_int8.py --shared ../shared set14     # int8 and float on Set14, and speed
    python benchmarks/study_int8.py --shared ../shared regions   # one part of the network at a time

Calibration: 64 x 64 LR crops (MATLAB bicubic x4 of 256 x 256 crops) of BSDS500 training
photographs, never a benchmark image; ``MIXED`` preset (symmetric weights, asymmetric activations,
what NNCF advises for networks with LeakyReLU), fast bias correction. ``set14``: the whole network
quantised (32 crops), each variant compiled for any shape and run on whole Set14 x4 LR images,
scored by the evaluation protocol (Y PSNR, LPIPS); speed is one 160 x 160 patch (a 128 tile with
its context, what ``--tile auto`` runs on the CPU), minimum of 3. ``regions``: one part quantised
at a time (the rest float), 16 calibration crops, PSNR of its output against float32 on 8 held-out
BSDS500 crops (bf16's is the yardstick).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

#: Parts of SPSR's generator by their converted node names, with their share of the multiply-adds.
REGIONS = {
    "trunk": r".*net\.(trunk|trunk_conv|conv_first)[./].*",  # 23 RRDBs at LR resolution: 38%
    "branch": r".*net\.(branch|gradient)[./].*",  # the gradient branch: 9%
    "hr": r".*net\.(upsampler|hr_conv0|hr_conv1)[./].*",  # upsampling and HR convolutions: 31%
    "fusion": r".*net\.fusion[./].*",  # the fusion block at HR resolution: 22%
}


def converted(weights: str):
    """The model's image output as a shape-free OpenVINO float model."""
    import openvino as ov

    from spsr_cli.engine.backends import image_module
    from spsr_cli.weights.loader import load_generator

    module = image_module(load_generator(weights))
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.rand(1, 3, 64, 64), check_trace=False)
    return ov.convert_model(traced, input=[ov.PartialShape([-1, 3, -1, -1])])


def crops(files: list[Path], rng: np.random.Generator, side: int) -> list[np.ndarray]:
    """One ``side`` x ``side`` LR crop (1 x 3 x side x side float32 in [0, 1]) of each photograph."""
    from PIL import Image

    from spsr_cli.io.imresize import bicubic_downscale

    out = []
    for path in files:
        hr = np.asarray(Image.open(path).convert("RGB"))
        y, x = rng.integers(0, hr.shape[0] - 4 * side), rng.integers(0, hr.shape[1] - 4 * side)
        lr = bicubic_downscale(np.ascontiguousarray(hr[y : y + 4 * side, x : x + 4 * side]), 4)
        out.append(np.ascontiguousarray(lr.transpose(2, 0, 1)[None]).astype(np.float32) / 255.0)
    return out


def quantise(model, calibration: list[np.ndarray], ignore: list[str] | None = None):
    import nncf

    static = model.clone()
    static.reshape(list(calibration[0].shape))
    return nncf.quantize(
        static,
        nncf.Dataset(calibration),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=ignore, validate=False) if ignore else None,
    )


def compile_(model, hint: str):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}
    return ov.Core().compile_model(model, "CPU", config)


def part_set14(args: argparse.Namespace, model, rng: np.random.Generator, photos: list[Path]) -> dict:
    from spsr_cli.eval.datasets import local_source
    from spsr_cli.eval.runner import evaluate

    started = time.perf_counter()
    int8 = quantise(model, crops([photos[i] for i in rng.choice(len(photos), 32, replace=False)], rng, 64))
    int8.reshape([-1, 3, -1, -1])
    print(f"quantised in {time.perf_counter() - started:.0f} s", flush=True)
    source = local_source(args.shared / "data/bench/Set14/HR", args.shared / "data/bench/Set14/LR_bicubic_X4")
    patch = np.random.default_rng(1).random((1, 3, 160, 160), dtype=np.float32)
    report = {}
    for name, (net, hint) in {
        "int8 (bf16 elsewhere)": (int8, "bf16"),
        "bf16": (model, "bf16"),
        "fp32": (model, "f32"),
        "int8 (fp32 elsewhere)": (int8, "f32"),
    }.items():
        fixed = net.clone()
        fixed.reshape([1, 3, 160, 160])
        compiled, times = compile_(fixed, hint), []
        for _ in range(3):
            t = time.perf_counter()
            compiled([patch])
            times.append(time.perf_counter() - t)
        compiled = compile_(net, hint)

        def upscale(lr: np.ndarray, compiled=compiled) -> np.ndarray:
            sr = compiled([lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0])[0][0]
            return (np.clip(sr, 0, 1) * 255.0).round().astype(np.uint8).transpose(1, 2, 0)

        means = evaluate(source, upscale=upscale, scale=4, niqe=False).means
        report[name] = {"patch160_s": min(times), "psnr": means["psnr"], "lpips": means["lpips"]}
        print(
            f"{name}: Set14 PSNR {means['psnr']:.3f} dB, LPIPS {means['lpips']:.4f}; "
            f"160 x 160 patch {min(times):.2f} s",
            flush=True,
        )
    return report


def part_regions(model, rng: np.random.Generator, photos: list[Path]) -> dict:
    order = rng.permutation(len(photos))
    calibration = crops([photos[i] for i in order[:16]], rng, 64)
    held_out = crops([photos[i] for i in order[100:108]], rng, 64)
    static = model.clone()
    static.reshape([1, 3, 64, 64])

    def outputs(net, hint: str) -> list[np.ndarray]:
        compiled = compile_(net, hint)
        return [np.round(np.clip(compiled([x])[0], 0, 1) * 255.0) for x in held_out]

    reference = outputs(static, "f32")

    def against_fp32(got: list[np.ndarray]) -> float:
        return float(np.mean([10 * np.log10(255.0**2 / np.mean((a - b) ** 2)) for a, b in zip(got, reference)]))

    report = {"bf16": against_fp32(outputs(static, "bf16"))}
    print(f"bf16 vs fp32: {report['bf16']:.2f} dB", flush=True)
    for region in REGIONS:
        rest = [pattern for name, pattern in REGIONS.items() if name != region]
        report[region] = against_fp32(outputs(quantise(model, calibration, ignore=rest), "bf16"))
        print(f"only {region} in int8: {report[region]:.2f} dB vs fp32", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["set14", "regions"])
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared folder (data/)")
    parser.add_argument("--weights", default="spsr-x4")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    photos = sorted((args.shared / "data/train/bsds500").glob("*.jpg"))
    model = converted(args.weights)
    report = part_set14(args, model, rng, photos) if args.part == "set14" else part_regions(model, rng, photos)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
