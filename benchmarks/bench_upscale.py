"""Speed and memory of ``spsr upscale``'s engine, for the README's "Measured performance" table.

    python benchmarks/bench_upscale.py                       # everything, CPU and (when present) CUDA
    python benchmarks/bench_upscale.py --parts speed --sizes 64 128 --devices cpu
    python benchmarks/bench_upscale.py --parts backends tiles --archs spsr rrdbnet --sizes 128
    python benchmarks/bench_upscale.py --parts process --photo p160.png --pairs 3   # whole process, auto vs torch
    python benchmarks/bench_upscale.py --parts quality --lr-dir ../shared/data/bench/Set14/LR_bicubic_X4 \\
        --weights "$(spsr train fetch-init)"                  # bf16 vs fp32 PSNR of a real model

Parts (each measurement runs in its own process, so peak-memory figures do not mix):

* ``speed``: for each architecture (``--archs``: ``spsr`` = spsr-x4; ``rrdbnet`` =
  realesrgan-x4plus, realsr-df2k, realsr-df2k-jpeg; ``rrdbnet-6b`` = realesrgan-x4plus-anime;
  ``srvgg`` = realesr-general-x4v3; ``dat`` = dat-light-x4; ``dat-x3``, ``dat-x2``: its x3 and x2),
  device and input size, the shipped default path (``Upscaler`` with the default precision and
  ``--tile auto``, uint8 output), a plain whole-image float32 forward (the baseline), and the
  engine in each precision. Output MP/s, effective GFLOP/s (multiply-adds per input pixel from
  the architecture's config, 2 FLOP each: 52.4 M for SPSR x4, 17.9 M for RRDBNet x4, 2.4 M for
  SRVGGNetCompact x4, 1.7 M for DAT-light x4, attention products included), the
  percentage of the device's measured matrix-multiply peak in that precision, and peak memory
  (CPU: growth of the resident set, VmHWM; CUDA: ``max_memory_allocated``). Random weights of
  the full architectures (speed does not depend on their values).
* ``memory``: ``run_jobs`` (decode, tiled upscale, PNG encode) on generated photos of three
  sizes with a fixed ``--tile``, as a user runs it; growth of the peak resident memory of the
  process, and its growth in bytes per extra output pixel between the two largest. The
  smallest generator (nf=4, nb=1): the tile's working set does not grow with the image,
  whatever the model, and a small one keeps this part fast.
* ``folder``: images per second on a folder of Set14-sized images (14 images, 62x90 to
  192x128 input) with the pipelined batch (``run_jobs``: decoding and encoding on worker
  threads) and with a plain loop (read, upscale, write one after the other).
* ``backends``: for each architecture and precision, torch and OpenVINO (``--backends``) side by
  side in one process, interleaved run by run (so a machine busy with other work slows both
  alike): seconds per output megapixel of the whole-image engine (``--sizes``), the ratio of
  each backend to torch in the same precision and to the shipped default (torch bf16 where the
  CPU has bfloat16 units), the first run (OpenVINO: conversion and compilation, with an empty
  cache) and the first run of a second upscaler on the filled cache (what a later process pays).
* ``tiles``: for each architecture and backend, seconds per useful output megapixel against the
  tile edge (``--tiles``; each patch is the tile plus 16 pixels of context per side, as
  ``--tile N`` runs it) and the growth of peak memory of one patch: the curve ``--tile auto``'s
  CPU cap (``CPU_AUTO_TILE``) was read from. Interleaved like ``backends``.
* ``process`` (only when asked): the issue's whole-process check: ``spsr upscale`` of one photo
  (``--photo``, default a generated 160 x 160 one) with the default model (``--weights``), each
  command a fresh process, ``--backend auto`` (OpenVINO where installed) against
  ``--backend torch``, ``--pairs`` pairs after one run that fills the OpenVINO cache, the order
  alternating pair by pair; wall seconds and peak resident memory of each process (``wait4``),
  the ratio per pair and its median, the backend the auto run reported, and the PSNR between the
  two outputs.
* ``quality``: PSNR of the bf16 output against the fp32 output (uint8, clamped) over a
  folder of low-resolution images, with given weights (a registry name, or any checkpoint
  ``spsr upscale --model`` reads: SPSR or ESRGAN-family RRDBNet); with ``--backends``
  including openvino, also OpenVINO bf16 and fp32 against torch fp32 (the parity check).

* ``cuda-check`` (only when asked; needs a GPU): the CUDA paths on a real device: float16
  default and channels_last, ``--tile auto`` from free VRAM, batched tiles against one by
  one, float16 against float32, and a real out-of-memory (memory capped at 6 GiB, 512-pixel
  tiles) that must end with a smaller tile.

No timing is asserted anywhere; ``--json FILE`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from workers import reset_peak_rss, spawn, status_kib

#: ``--archs`` names -> (registry models of that architecture, full-size config kwargs).
ARCHS = {
    "spsr": ("spsr-x4", "spsr", {}),
    "rrdbnet": ("realesrgan-x4plus, realsr-df2k, realsr-df2k-jpeg", "rrdbnet", {}),
    "rrdbnet-6b": ("realesrgan-x4plus-anime", "rrdbnet", {"nb": 6}),
    "srvgg": ("realesr-general-x4v3", "srvgg", {}),
    "dat": ("dat-light-x4", "dat", {}),
    "dat-x3": ("dat-light-x3", "dat", {"scale": 3}),
    "dat-x2": ("dat-light-x2", "dat", {"scale": 2}),
}
#: ``--tiny``: the smallest config of each architecture (a smoke test of this script).
TINY = {
    "spsr": {"nf": 8, "nb": 2, "gc": 4},
    "rrdbnet": {"nf": 8, "nb": 2, "gc": 4},
    "srvgg": {"nf": 8, "num_conv": 2},
    "dat": {"nf": 16, "depth": 2, "heads": 2, "ffn_channels": 16},
}
#: Input sizes (width, height) of Set14's x4 low-resolution images.
SET14_SIZES = [
    (125, 120),
    (180, 144),
    (128, 128),
    (88, 72),
    (62, 90),
    (69, 69),
    (125, 90),
    (88, 72),
    (128, 128),
    (128, 128),
    (192, 128),
    (128, 128),
    (132, 164),
    (146, 97),
]


# ---------------------------------------------------------------- helpers (run inside the worker processes)


def _model(tiny: bool, arch: str = "spsr"):
    from spsr_cli.model.architectures import build, get_architecture

    torch.manual_seed(0)
    _, name, kwargs = ARCHS[arch]
    config = get_architecture(name).config_type(**({**kwargs, **TINY[name]} if tiny else kwargs))
    return build(config).eval().requires_grad_(False)


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random H x W x 3 float32 image in [0, 1] (compresses like a photo, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    rows = np.linspace(0, small.shape[0] - 1, height)
    cols = np.linspace(0, small.shape[1] - 1, width)
    r0, c0 = rows.astype(int), cols.astype(int)
    r1, c1 = np.minimum(r0 + 1, small.shape[0] - 1), np.minimum(c0 + 1, small.shape[1] - 1)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = small[r0][:, c0] * (1 - fc) + small[r0][:, c1] * fc
    bottom = small[r1][:, c0] * (1 - fc) + small[r1][:, c1] * fc
    image = top * (1 - fr) + bottom * fr
    return np.clip(image + rng.normal(0, 0.02, image.shape).astype(np.float32), 0, 1).astype(np.float32)


def _speed_case(case: dict, queue: mp.Queue) -> None:
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.model.architectures import architecture_of

    device, size, kind = case["device"], case["size"], case["kind"]
    model = _model(case["tiny"], case.get("arch", "spsr"))
    image_of, macs, scale = architecture_of(model).image, model.config.macs_per_input_pixel, model.scale
    rgb = _photo(size, size)
    cuda = device.startswith("cuda")
    if kind == "baseline":  # plain whole-image float32 forward, result back on the CPU
        net = model.to(device)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()

        def run() -> object:
            with torch.inference_mode():
                return image_of(net(x.to(device))).float().clamp(0, 1).cpu()

        precision, tile, batch = "float32", None, 1
    else:
        options = InferenceOptions(
            device=device,
            precision=case.get("precision"),
            tile=case.get("tile", "auto"),
            compile=case.get("compile", False),
        )
        upscaler = Upscaler(model, options)
        plan = upscaler.plan(size, size)

        def run() -> object:
            return upscaler.upscale_array(rgb, dtype=np.uint8)

        precision, tile, batch = str(upscaler.dtype).removeprefix("torch."), plan.tile, plan.batch
    del model
    run()  # warm-up: oneDNN/cuDNN plans, allocator, torch.compile
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = status_kib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    for _ in range(case["repeat"]):
        out = run()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / case["repeat"]
    del out
    peak = torch.cuda.max_memory_allocated() if cuda else (status_kib("VmHWM") - rss_before) * 1024
    flops = 2 * macs * size * size
    queue.put(
        dict(
            case,
            precision=precision,
            tile=tile,
            batch=batch,
            seconds=seconds,
            output_mp_per_s=(scale * size) ** 2 / 1e6 / seconds,
            gflops=flops / seconds / 1e9,
            peak_mib=max(peak, 0) / 2**20,
            threads=torch.get_num_threads(),
        )
    )


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _backends_case(case: dict, queue: mp.Queue) -> None:
    """torch and OpenVINO in one process on one whole-image shape, interleaved run by run."""
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler

    model = _model(case["tiny"], case["arch"])
    size, scale = case["size"], model.scale
    rgb = _photo(size, size)
    rows: dict[str, dict] = {}
    engines = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["SPSR_HOME"] = home  # an empty cache: the first OpenVINO run converts
        for precision in case["precisions"]:
            for backend in case["backends"]:
                key = f"{backend} {precision}"
                options = InferenceOptions(device="cpu", precision=precision, tile=0, backend=backend)
                up = Upscaler(model, options)
                first = _timed(lambda up=up: up.upscale_array(rgb))
                engines[key] = up
                timings = dict(getattr(up.backend, "timings", {}))
                second = Upscaler(model, options)  # as a later process would: the cache is filled
                cached_first = _timed(lambda up=second: up.upscale_array(rgb))
                rows[key] = dict(
                    backend=backend,
                    precision=precision,
                    first_run_s=first,
                    cached_first_run_s=cached_first,
                    cached_timings=dict(getattr(second.backend, "timings", {})),
                    one_time=timings,
                    runs=[],
                )
                del second
        for _ in range(case["repeat"]):
            for key, up in engines.items():
                rows[key]["runs"].append(_timed(lambda up=up: up.upscale_array(rgb)))
    megapixels = (scale * size) ** 2 / 1e6
    for row in rows.values():
        row["seconds"] = min(row["runs"])
        row["s_per_mp"] = row["seconds"] / megapixels
    queue.put(dict(case, rows=list(rows.values()), threads=torch.get_num_threads()))


def _tiles_case(case: dict, queue: mp.Queue) -> None:
    """Seconds per useful output megapixel against the tile edge, backends interleaved."""
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler

    model = _model(case["tiny"], case["arch"])
    scale, overlap = model.scale, 16
    engines = {
        b: Upscaler(model, InferenceOptions(device="cpu", precision=case.get("precision"), tile=0, backend=b))
        for b in case["backends"]
    }
    rows = []
    for tile in case["tiles"]:
        edge = tile + 2 * overlap
        rgb = _photo(edge, edge, seed=tile)
        for up in engines.values():  # compile OpenVINO for this shape outside the timing
            models = getattr(up.backend, "models", None)
            if models is not None:
                from spsr_cli.engine.openvino_backend import PRECISION_HINTS

                models.compiled((1, 3, edge, edge), PRECISION_HINTS[up.dtype])
        runs: dict[str, list] = {b: [] for b in engines}
        peaks: dict[str, float] = {}
        for _ in range(case["repeat"]):
            for name, up in engines.items():
                rss_before = status_kib("VmRSS")
                reset_peak_rss()
                runs[name].append(_timed(lambda up=up, rgb=rgb: up.upscale_array(rgb)))
                peaks[name] = max(peaks.get(name, 0.0), (status_kib("VmHWM") - rss_before) / 1024)
        useful = (scale * tile) ** 2 / 1e6
        for name, up in engines.items():
            rows.append(
                dict(
                    backend=name,
                    precision=str(up.dtype).removeprefix("torch."),
                    tile=tile,
                    patch=edge,
                    seconds=min(runs[name]),
                    s_per_useful_mp=min(runs[name]) / useful,
                    peak_growth_mib=peaks[name],
                )
            )
    queue.put(dict(case, rows=rows, threads=torch.get_num_threads()))


def _matmul_peak_case(case: dict, queue: mp.Queue) -> None:
    """GFLOP/s of a large matrix multiply: the device's practical peak in that dtype."""
    device, dtype = case["device"], getattr(torch, case["dtype"])
    n = 4096 if device.startswith("cuda") else 2048
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        a @ b
        reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    queue.put(dict(case, gflops=2 * n**3 * reps / (time.perf_counter() - start) / 1e9))


def _memory_case(case: dict, queue: mp.Queue) -> None:
    from PIL import Image as PILImage

    from spsr_cli.engine.batch import OutputSpec, plan_jobs, run_jobs
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.model.spsr import SPSRConfig, SPSRNet

    width, height = case["width"], case["height"]
    torch.manual_seed(0)  # the smallest generator: the tile's working set stays small beside the output
    model = SPSRNet(config=SPSRConfig(nf=4, nb=1, gc=2)).eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "photo.png"
        PILImage.fromarray((_photo(height, width) * 255).round().astype(np.uint8)).save(source)
        jobs = plan_jobs([str(source)], OutputSpec(output=Path(folder) / "out"), scale=4)
        options = InferenceOptions(device="cpu", precision=case.get("precision"), tile=case["tile"])
        rss_before = status_kib("VmRSS")
        reset_peak_rss()
        start = time.perf_counter()
        result = run_jobs(jobs, model, options)
        seconds = time.perf_counter() - start
        assert not result.failed, result.failed
    queue.put(
        dict(
            case,
            seconds=seconds,
            peak_mib=(status_kib("VmHWM") - rss_before) / 1024,
            output_pixels=16 * width * height,
        )
    )


def _folder_case(case: dict, queue: mp.Queue) -> None:
    from PIL import Image as PILImage

    from spsr_cli.engine.batch import OutputSpec, plan_jobs, run_jobs
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.pipeline import upscale_image
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.io.images import read_image, write_image

    model = _model(case["tiny"])
    options = InferenceOptions(device=case["device"])
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / "in"
        src.mkdir()
        for i, (w, h) in enumerate(SET14_SIZES):
            PILImage.fromarray((_photo(h, w, seed=i) * 255).round().astype(np.uint8)).save(src / f"img_{i:03d}.png")
        jobs = plan_jobs([str(src)], OutputSpec(output=Path(folder) / "out"), scale=4)
        warm = Upscaler(model, options)
        for w, h in sorted(set(SET14_SIZES)):  # warm-up: convolution plans for every shape
            warm.upscale_array(_photo(h, w))
        del warm
        start = time.perf_counter()
        if case["pipelined"]:
            result = run_jobs(jobs, model, options)
            assert not result.failed, result.failed
        else:
            upscaler = Upscaler(model, options)
            for job in jobs:
                write_image(job.target, upscale_image(read_image(job.source), upscaler))
        seconds = time.perf_counter() - start
    queue.put(dict(case, seconds=seconds, images_per_s=len(jobs) / seconds))


def _quality_case(case: dict, queue: mp.Queue) -> None:
    from PIL import Image as PILImage

    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.weights.loader import load_generator

    model = load_generator(case["weights"])  # a registry name or any checkpoint `spsr upscale --model` reads
    source = f"{model.config.architecture} ({case['weights']})"
    engines = {
        p: Upscaler(model, InferenceOptions(device=case["device"], precision=p, backend=case.get("backend", "torch")))
        for p in ("fp32", case["precision"])
    }
    if case.get("backend", "torch") != "torch":  # against torch fp32, the reference
        engines["fp32"] = Upscaler(model, InferenceOptions(device=case["device"], precision="fp32"))
        engines[f"{case['backend']} fp32"] = Upscaler(
            model, InferenceOptions(device=case["device"], precision="fp32", backend=case["backend"])
        )
    rows = []
    for file in sorted(Path(case["lr_dir"]).iterdir()):
        rgb = np.asarray(PILImage.open(file).convert("RGB"), dtype=np.float32) / 255.0
        outputs = {k: up.upscale_array(rgb, dtype=np.uint8).astype(np.float64) for k, up in engines.items()}
        ref = outputs.pop("fp32")
        row: dict = dict(image=file.name, size=list(rgb.shape[1::-1]))
        for key, low in outputs.items():
            mse = float(np.mean((ref - low) ** 2))
            suffix = "" if key == case["precision"] else f" ({key})"
            row["psnr" + suffix] = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
            row["max_abs" + suffix] = int(np.abs(ref - low).max())
        rows.append(row)
    summary = {}
    for key in [k for k in rows[0] if k.startswith("psnr")]:
        values = [r[key] for r in rows]
        mse_all = np.mean([10 ** (-v / 10) for v in values if np.isfinite(v)] or [0.0]) * 255.0**2
        worst = min(rows, key=lambda r: r[key])
        summary[key] = dict(
            mean_psnr=float(np.mean(values)),
            min_psnr=float(worst[key]),
            worst_image=worst["image"],
            pooled_psnr=float(10 * np.log10(255.0**2 / mse_all)) if mse_all else float("inf"),
        )
    queue.put(dict(case, source=source, images=rows, summary=summary, **summary["psnr"]))


def _cuda_check_case(case: dict, queue: mp.Queue) -> None:
    """The CUDA paths, checked on a real GPU: each line is (what, ok, detail)."""
    import logging

    from spsr_cli.engine.device import free_memory_bytes
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler, auto_tile_size

    checks = []
    model = _model(tiny=False)
    rgb = _photo(256, 256)
    default = Upscaler(model, InferenceOptions(device="cuda"))
    weight = default.model.conv_first.weight
    checks.append(
        (
            "fp16 default, channels_last",
            default.dtype == torch.float16 and weight.is_contiguous(memory_format=torch.channels_last),
            f"{default.dtype}",
        )
    )
    expected = auto_tile_size(model, default.device, default.dtype, default.overlap)
    checks.append(
        (
            "--tile auto from free VRAM",
            default.tile == expected,
            f"tile {default.tile}, free {free_memory_bytes(default.device) / 2**30:.1f} GiB",
        )
    )
    tiled = Upscaler(model, InferenceOptions(device="cuda", tile=64))
    plan = tiled.plan(256, 256)
    batched = tiled.upscale_array(rgb).astype(np.float64)
    tiled.max_batch = 1
    single = tiled.upscale_array(rgb).astype(np.float64)
    mse = float(np.mean((batched - single) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    checks.append(
        ("batched tiles", plan.batch > 1 and psnr > 50, f"{plan.batch} tiles per pass, {psnr:.1f} dB vs one by one")
    )
    fp32 = (
        Upscaler(model, InferenceOptions(device="cuda", precision="fp32", tile=64))
        .upscale_array(rgb)
        .astype(np.float64)
    )
    mse = float(np.mean((fp32 - single) ** 2))
    checks.append(
        (
            "fp16 vs fp32",
            mse == 0 or 10 * np.log10(255.0**2 / mse) > 40,
            f"{10 * np.log10(255.0**2 / max(mse, 1e-12)):.1f} dB",
        )
    )
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("spsr_cli.engine.tiling").addHandler(handler)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (6 << 30) / total))  # a 6 GiB GPU
    big = Upscaler(model, InferenceOptions(device="cuda", tile=512))
    big.max_batch = 1
    try:
        out = big.upscale_into(
            torch.from_numpy(_photo(512, 512)).permute(2, 0, 1)[None],
            np.empty((2048, 2048, 3), np.uint8),
            big.plan(512, 512),
        )
        ok = big.tile < 512 and out.std() > 0
    except Exception as err:  # reported, not raised: the other checks still count
        ok, records = False, records + [f"{type(err).__name__}: {err}"]
    checks.append(("real OOM -> smaller tile", ok, f"tile now {big.tile}; " + " | ".join(records[-3:])))
    queue.put(dict(case, checks=checks))


# ---------------------------------------------------------------- parts


def part_speed(args: argparse.Namespace, devices: list[str]) -> list[dict]:
    from spsr_cli.engine.device import cpu_has_bf16_units

    results = []
    for device in devices:
        cuda = device.startswith("cuda")
        precisions = ["fp16", "bf16", "fp32"] if cuda else ["bf16", "fp32"]
        if not cuda and not cpu_has_bf16_units():
            # emulated bf16 (no AMX/AVX512-BF16) runs several times slower than fp32 and is never the default
            print(f"\n{device}: no bfloat16 units (AMX/AVX512-BF16): the bf16 cases are left out", flush=True)
            precisions = ["fp32"]
        peaks = {
            p: spawn(
                _matmul_peak_case,
                dict(device=device, dtype={"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}[p]),
            )["gflops"]
            for p in precisions
        }
        print(
            f"\n{device}: matrix-multiply peak " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()),
            flush=True,
        )
        print(
            "| model | input | case | precision | tile x batch | output MP/s | s / output MP | GFLOP/s | % of peak | "
            "s / image | peak memory |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        cases = [
            dict(kind="default", label="default (`spsr upscale`)"),
            dict(kind="baseline", label="whole-image fp32 forward"),
        ]
        cases += [dict(kind="engine", label=f"engine --precision {p}", precision=p) for p in precisions]
        if cuda and args.compile:
            cases.append(dict(kind="engine", label="default + --compile", compile=True))
        for arch in args.archs:
            for size in args.sizes:
                for case in cases:
                    r = spawn(
                        _speed_case, dict(case, arch=arch, device=device, size=size, repeat=args.repeat, tiny=args.tiny)
                    )
                    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[r["precision"]]
                    r["percent_of_peak"] = 100 * r["gflops"] / peaks[short]
                    results.append(r)
                    print(
                        f"| {arch} ({ARCHS[arch][0]}) | {size}x{size} | {r['label']} | {short} | "
                        f"{r['tile'] or 'whole'} x {r['batch']} | {r['output_mp_per_s']:.4f} | "
                        f"{1 / r['output_mp_per_s']:.1f} | {r['gflops']:.0f} | {r['percent_of_peak']:.0f}% | "
                        f"{r['seconds']:.2f} | {r['peak_mib']:.0f} MiB |",
                        flush=True,
                    )
    return results


def _cpu_kind() -> str:
    from spsr_cli.engine.device import cpu_flags

    flags = cpu_flags()
    kind = (
        "AMX"
        if "amx_bf16" in flags
        else "AVX512-BF16"
        if "avx512_bf16" in flags
        else "AVX2"
        if "avx2" in flags
        else "?"
    )
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA")  # oneDNN (torch and OpenVINO) limited to an older ISA
    if capped:
        kind += f" capped to {capped} (ONEDNN_MAX_CPU_ISA)"
    return f"{os.cpu_count()}-CPU {kind}, torch {torch.get_num_threads()} threads"


def part_backends(args: argparse.Namespace) -> list[dict]:
    from spsr_cli.engine.device import cpu_has_bf16_units

    precisions = ["bf16", "fp32"] if cpu_has_bf16_units() else ["fp32"]
    default = f"torch {precisions[0]}"
    print(f"\nbackends side by side in one process, interleaved ({_cpu_kind()}); whole image, min of runs")
    print(
        "| model | input | backend | precision | s / output MP | vs torch, same precision | vs default "
        "(torch " + precisions[0] + ") | first run (empty cache) | first run, cached |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for arch in args.archs:
        for size in args.sizes:
            r = spawn(
                _backends_case,
                dict(
                    arch=arch,
                    size=size,
                    precisions=precisions,
                    backends=args.backends,
                    repeat=args.repeat,
                    tiny=args.tiny,
                ),
            )
            results.append(r)
            rows = {f"{row['backend']} {row['precision']}": row for row in r["rows"]}
            for row in rows.values():
                same = rows[f"torch {row['precision']}"]["s_per_mp"] / row["s_per_mp"]
                vs_default = rows[default]["s_per_mp"] / row["s_per_mp"] if default in rows else float("nan")
                one_time = ", ".join(f"{k} {v:.1f} s" for k, v in row["one_time"].items())
                print(
                    f"| {arch} | {size}x{size} | {row['backend']} | {row['precision']} | {row['s_per_mp']:.1f} | "
                    f"{same:.2f}x | {vs_default:.2f}x | {row['first_run_s']:.1f} s"
                    + (f" ({one_time})" if one_time else "")
                    + f" | {row['cached_first_run_s']:.1f} s |",
                    flush=True,
                )
    return results


def part_tiles(args: argparse.Namespace) -> list[dict]:
    print(f"\nCPU tiles ({_cpu_kind()}): s per useful output MP (peak memory growth of one patch), interleaved")
    results = []
    for arch in args.archs:
        r = spawn(
            _tiles_case,
            dict(arch=arch, tiles=args.tiles, backends=args.backends, repeat=args.repeat, tiny=args.tiny),
        )
        results.append(r)
        print(f"| {arch} | " + " | ".join(f"tile {t} (patch {t + 32})" for t in args.tiles) + " |")
        print("|---|" + "---|" * len(args.tiles))
        for backend in args.backends:
            cells = [row for row in r["rows"] if row["backend"] == backend]
            print(
                f"| {backend} {cells[0]['precision']} | "
                + " | ".join(f"{c['s_per_useful_mp']:.1f} ({c['peak_growth_mib']:.0f} MiB)" for c in cells)
                + " |",
                flush=True,
            )
    return results


def part_memory(args: argparse.Namespace) -> list[dict]:
    sizes = [(600, 450), (1200, 900), (1800, 1350)] if not args.tiny else [(80, 60), (160, 120), (240, 180)]
    print(f"\nmemory: run_jobs (PNG in, PNG out), smallest generator (nf=4, nb=1), --tile {args.memory_tile}")
    print("| input | output MP | peak memory | s |")
    print("|---|---|---|---|")
    results = []
    for width, height in sizes:
        r = spawn(_memory_case, dict(width=width, height=height, tile=args.memory_tile))
        results.append(r)
        print(
            f"| {width}x{height} | {r['output_pixels'] / 1e6:.1f} | {r['peak_mib']:.0f} MiB | {r['seconds']:.1f} |",
            flush=True,
        )
    first, last = results[-2], results[-1]  # the two largest: the output dominates the tile's working set
    slope = (last["peak_mib"] - first["peak_mib"]) * 2**20 / (last["output_pixels"] - first["output_pixels"])
    print(f"growth: {slope:.1f} bytes per extra output pixel")
    results.append(dict(bytes_per_extra_output_pixel=slope))
    return results


def part_folder(args: argparse.Namespace, devices: list[str]) -> list[dict]:
    results = []
    print("\nfolder of 14 Set14-sized images (PNG in, PNG out), default precision and --tile auto")
    print("| device | model | pipelined | images/s | s |")
    print("|---|---|---|---|---|")
    for device in devices:
        for tiny in [True] if args.tiny else [True, False]:
            for pipelined in (False, True):
                r = spawn(_folder_case, dict(device=device, tiny=tiny, pipelined=pipelined))
                results.append(r)
                size, piped = "tiny" if tiny else "full", "yes" if pipelined else "no"
                print(f"| {device} | {size} | {piped} | {r['images_per_s']:.3f} | {r['seconds']:.1f} |", flush=True)
    return results


def _run_process(argv: list[str], log: Path) -> dict:
    """Run ``argv`` as a fresh process (stdout and stderr to ``log``): its wall seconds, exit code
    and peak resident memory (``wait4``'s ``ru_maxrss``, KiB on Linux)."""
    with open(log, "wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {proc.returncode}; see {log}")
    return dict(seconds=seconds, peak_rss_kib=usage.ru_maxrss)


def _png_psnr(a: str, b: str) -> float:
    from PIL import Image as PILImage

    x = np.asarray(PILImage.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(PILImage.open(b).convert("RGB"), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def part_process(args: argparse.Namespace) -> list[dict]:
    from PIL import Image as PILImage

    work = Path(tempfile.mkdtemp(prefix="spsr-bench-process-"))
    photo = Path(args.photo) if args.photo else work / "photo.png"
    if not args.photo:
        PILImage.fromarray((_photo(160, 160, seed=3) * 255).round().astype(np.uint8)).save(photo)
    weights = args.weights or "spsr-x4"
    if args.tiny:
        from spsr_cli.weights.store import write_generator_file

        model = _model(True, "spsr")
        weights = str(work / "tiny.safetensors")
        write_generator_file(Path(weights), model.state_dict(), model.config, source="bench", licence="MIT")
    cli = [sys.executable, "-m", "spsr_cli", "-v", "upscale", str(photo), "--model", weights]

    def run(name: str, backend: str) -> dict:
        """The command as a user types it (no --json: a record warms the model up, a user's run does not);
        which backend ran, and whether torch was loaded, are read from its -v log."""
        out, log = work / f"{name}.png", work / f"{name}.log"
        result = _run_process([*cli, "-o", str(out), "--backend", backend], log)
        text = log.read_text(errors="replace")
        ran = re.search(r"\d+ x \d+ (?:image|frames): (\w+)", text)
        name = (ran.group(1) if ran else "?") + (", no torch" if "torch not loaded" in text else "")
        return dict(result, output=str(out), backend=name)

    print(f"\nwhole process, {photo.name}, --model {Path(weights).name} ({_cpu_kind()}); one fresh process a command")
    first = run("first", "auto")
    print(
        f"first run, --backend auto (fills the OpenVINO cache): {first['seconds']:.1f} s, "
        f"{first['peak_rss_kib'] / 2**20:.2f} GiB, ran {first['backend']}"
    )
    print("| pair | --backend auto | --backend torch | ratio (torch / auto) |\n|---|---|---|---|")
    pairs = []
    for i in range(args.pairs):
        order = ["auto", "torch"] if i % 2 == 0 else ["torch", "auto"]  # alternating: drift hits both
        runs = {backend: run(f"{backend}-{i}", backend) for backend in order}
        auto, plain = runs["auto"], runs["torch"]
        ratio = plain["seconds"] / auto["seconds"]
        pairs.append(dict(pair=i + 1, auto=auto, torch=plain, ratio=ratio))
        print(
            f"| {i + 1} | {auto['seconds']:.1f} s, {auto['peak_rss_kib'] / 2**20:.2f} GiB ({auto['backend']}) | "
            f"{plain['seconds']:.1f} s, {plain['peak_rss_kib'] / 2**20:.2f} GiB | {ratio:.2f}x |",
            flush=True,
        )
    agreement = _png_psnr(pairs[-1]["auto"]["output"], pairs[-1]["torch"]["output"]) if pairs else None
    median = float(np.median([p["ratio"] for p in pairs])) if pairs else None
    if pairs:
        print(f"median ratio {median:.2f}x; outputs of auto and torch agree to {agreement:.2f} dB PSNR")
    return [dict(photo=str(photo), weights=weights, first=first, pairs=pairs, median_ratio=median, psnr=agreement)]


def part_quality(args: argparse.Namespace, devices: list[str]) -> list[dict]:
    if not args.lr_dir or not args.weights:
        print("\nquality: skipped (give --lr-dir and --weights)")
        return []
    results = []
    for device in devices:
        for precision in ["fp16", "bf16"] if device.startswith("cuda") else ["bf16"]:
            for backend in ["torch"] if device.startswith("cuda") else args.backends:
                r = spawn(
                    _quality_case,
                    dict(
                        device=device,
                        precision=precision,
                        backend=backend,
                        lr_dir=args.lr_dir,
                        weights=args.weights,
                    ),
                )
                results.append(r)
                for key, stats in r["summary"].items():
                    what = f"{backend} {precision}" if key == "psnr" else key[len("psnr (") : -1]
                    print(
                        f"\nquality on {device}: {what} vs torch fp32 ({r['source']}), {len(r['images'])} images: "
                        f"mean PSNR {stats['mean_psnr']:.2f} dB, lowest {stats['min_psnr']:.2f} dB "
                        f"({stats['worst_image']}), pooled {stats['pooled_psnr']:.2f} dB"
                    )
                    for row in r["images"]:
                        suffix = key[len("psnr") :]
                        print(
                            f"  {row['image']}: {row[key]:.2f} dB "
                            f"(largest difference {row['max_abs' + suffix]} grey levels)"
                        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["speed", "memory", "folder", "quality"],
        choices=["speed", "backends", "tiles", "memory", "folder", "process", "quality", "cuda-check"],
    )
    parser.add_argument(
        "--backends",
        nargs="*",
        default=None,
        choices=["torch", "openvino"],
        help="backends for the backends, tiles and quality parts (default: torch, and openvino where installed)",
    )
    parser.add_argument(
        "--tiles", type=int, nargs="*", default=[64, 96, 128, 192, 256], help="tile edges for the tiles part"
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256], help="input edges for the speed part")
    parser.add_argument(
        "--archs",
        nargs="*",
        default=list(ARCHS),
        choices=list(ARCHS),
        help="architectures for the speed part (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per case (after one warm-up run)")
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--memory-tile", type=int, default=128, help="--tile of the memory part")
    parser.add_argument("--compile", action="store_true", help="also time --compile (CUDA)")
    parser.add_argument("--tiny", action="store_true", help="tiny generator everywhere (a smoke test of this script)")
    parser.add_argument("--lr-dir", default=None, help="quality part: folder of low-resolution images")
    parser.add_argument(
        "--weights", default=None, help="quality and process parts: registry name or checkpoint (SPSR or RRDBNet)"
    )
    parser.add_argument("--photo", default=None, help="process part: the photo (default: a generated 160 x 160)")
    parser.add_argument("--pairs", type=int, default=3, help="process part: auto/torch pairs after the first run")
    parser.add_argument("--json", default=None, help="write every result to this file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if args.backends is None:
        from spsr_cli.engine.openvino_runtime import openvino_installed

        args.backends = ["torch"] + (["openvino"] if openvino_installed() else [])
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    results: dict[str, list[dict]] = {}
    if "speed" in args.parts:
        results["speed"] = part_speed(args, devices)
    if "backends" in args.parts:
        results["backends"] = part_backends(args)
    if "tiles" in args.parts:
        results["tiles"] = part_tiles(args)
    if "memory" in args.parts:
        results["memory"] = part_memory(args)
    if "folder" in args.parts:
        results["folder"] = part_folder(args, devices)
    if "process" in args.parts:
        results["process"] = part_process(args)
    if "quality" in args.parts:
        results["quality"] = part_quality(args, devices)
    if "cuda-check" in args.parts:
        r = spawn(_cuda_check_case, dict(device="cuda"))
        print("\nCUDA paths:")
        for what, ok, detail in r["checks"]:
            print(f"  {'ok  ' if ok else 'FAIL'} {what}: {detail}")
        results["cuda_check"] = [r]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
