"""Video upscaling: frames per second per model and precision, and peak memory against clip length.

    python benchmarks/bench_video.py clip clip.mp4                  # a 2-second 64x48 test clip with a sine tone
    python benchmarks/bench_video.py speed                          # fps per model/precision (README table)
    python benchmarks/bench_video.py memory                         # peak memory for clips of 4, 16 and 48 s

Needs ``pip install "spsr-cli[video]"``; the registry models must be downloadable or cached
(``spsr weights download NAME``). Each measurement runs in its own process.

* ``speed``: a generated clip (``--size``, ``--seconds``, ``--fps``; test pattern with a sine tone)
  through :func:`spsr_cli.engine.video.upscale_video` with each ``--models`` entry and ``--precisions``
  (``default``: what ``spsr upscale`` picks; ``fp32``), ``--tile auto``: frames per second of the whole
  job (decode, network, encode with H.264 crf 18 medium, mux), and, in the same process on the same
  frames, of the network alone (:func:`~spsr_cli.engine.pipeline.upscale_image` in a loop), so the
  ratio shows what decoding and encoding cost beside the network.
* ``memory``: clips of ``--lengths`` seconds through ``upscale_video`` with the smallest generator
  (nf=4, nb=1; the frames' memory does not depend on the model); the growth of the process's peak
  resident memory (VmHWM) during the job, after the model is loaded and one frame warmed up.

No timing is asserted anywhere; ``--json FILE`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from workers import reset_peak_rss, spawn, status_kib

SAMPLE_RATE = 48000


def make_clip(path: Path, *, seconds: float = 2.0, size: tuple[int, int] = (64, 48), fps: int = 24) -> Path:
    """A test pattern (colour bars over moving ramps) with a 440 Hz sine tone in AAC, H.264 crf 18."""
    import av

    width, height = size
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps, options={"crf": "18"})
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.time_base = Fraction(1, fps)
    audio = out.add_stream("aac", rate=SAMPLE_RATE)
    audio.layout = "mono"
    yy, xx = np.mgrid[0:height, 0:width]
    for index in range(round(seconds * fps)):
        frame = np.stack(
            [(xx * 256 // width + index * 4) % 256, (yy * 256 // height) % 256, ((xx + yy) * 2 + index * 3) % 256],
            axis=-1,
        ).astype(np.uint8)
        for i, colour in enumerate([(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255)]):
            frame[: height // 3, i * width // 5 : (i + 1) * width // 5] = colour
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts = index
        out.mux(video.encode(picture))
    out.mux(video.encode(None))
    samples = int(seconds * SAMPLE_RATE)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE)).astype(np.float32)
    for start in range(0, samples, 1024):
        chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
        out.mux(audio.encode(chunk))
    out.mux(audio.encode(None))
    out.close()
    return path


def _speed_case(case: dict, results: mp.Queue) -> None:
    from spsr_cli.engine.batch import upscaler_settings
    from spsr_cli.engine.model_choice import ModelChoice
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.pipeline import upscale_image
    from spsr_cli.engine.video import upscale_video
    from spsr_cli.io.images import Image
    from spsr_cli.io.video import VideoReader, Window, probe
    from spsr_cli.weights.loader import load_generator

    precision = None if case["precision"] == "default" else case["precision"]
    options = InferenceOptions(device="cpu", precision=precision)
    upscaler = ModelChoice.of_module(load_generator(case["model"]), options).first
    clip = Path(case["clip"])
    info = probe(clip)
    with VideoReader(info) as reader:
        rgbs = [reader.rgb(f) for f in reader.events(Window(), (), ())]
    upscale_image(Image(rgb=rgbs[0]), upscaler)  # warm-up (oneDNN plans per shape)
    started = time.perf_counter()
    for rgb in rgbs:
        upscale_image(Image(rgb=rgb), upscaler)
    network = time.perf_counter() - started
    reset_peak_rss()
    base = status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as folder:
        report = upscale_video(info, Path(folder) / "out.mp4", upscaler)
    results.put(
        {
            "model": case["model"],
            **upscaler_settings(upscaler),
            "frames": report.frames,
            "input": f"{info.width}x{info.height}",
            "output": f"{report.output_size[0]}x{report.output_size[1]}",
            "video_fps": report.frames / report.seconds,
            "network_fps": len(rgbs) / network,
            "s_per_output_mp": report.seconds / report.frames / (report.output_size[0] * report.output_size[1] / 1e6),
            "peak_growth_mib": (status_kib("VmHWM") - base) / 1024,
        }
    )


def _memory_case(case: dict, results: mp.Queue) -> None:
    import torch

    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.pipeline import upscale_image
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.engine.video import upscale_video
    from spsr_cli.io.images import Image
    from spsr_cli.io.video import probe
    from spsr_cli.model.spsr import SPSRConfig, SPSRNet

    torch.manual_seed(0)
    upscaler = Upscaler(SPSRNet(config=SPSRConfig(nf=4, nb=1, gc=4)).eval(), InferenceOptions(device="cpu"))
    info = probe(Path(case["clip"]))
    upscale_image(Image(rgb=np.zeros((info.height, info.width, 3), np.float32)), upscaler)  # warm-up
    reset_peak_rss()
    base = status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as folder:
        report = upscale_video(info, Path(folder) / "out.mp4", upscaler)
    results.put(
        {
            "seconds_of_video": case["seconds"],
            "frames": report.frames,
            "output": f"{report.output_size[0]}x{report.output_size[1]}",
            "max_in_flight": report.max_in_flight,
            "rss_before_mib": base / 1024,
            "peak_growth_mib": (status_kib("VmHWM") - base) / 1024,
        }
    )


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["clip", "speed", "memory"])
    parser.add_argument("path", nargs="?", help="clip: where to write it")
    parser.add_argument("--models", nargs="+", default=["spsr-x4", "realesrgan-x4plus", "realesrgan-x4plus-anime"])
    parser.add_argument("--precisions", nargs="+", default=["default", "fp32"])
    parser.add_argument("--size", type=_size, default=None, help="WxH of the generated clip")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=None)
    parser.add_argument("--lengths", type=float, nargs="+", default=[4, 16, 48], help="memory: clip lengths in s")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        if args.part == "clip":
            if not args.path:
                parser.error("clip needs the path to write")
            make_clip(Path(args.path), seconds=args.seconds, size=args.size or (64, 48), fps=args.fps or 24)
            print(args.path)
            return
        if args.part == "speed":
            clip = make_clip(
                Path(folder) / "clip.mp4", seconds=args.seconds, size=args.size or (128, 72), fps=args.fps or 12
            )
            for model in args.models:
                for precision in args.precisions:
                    row = spawn(_speed_case, {"model": model, "precision": precision, "clip": str(clip)})
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        else:
            for seconds in args.lengths:
                clip = make_clip(
                    Path(folder) / f"clip{seconds:g}.mp4",
                    seconds=seconds,
                    size=args.size or (96, 64),
                    fps=args.fps or 8,
                )
                row = spawn(_memory_case, {"clip": str(clip), "seconds": seconds})
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
