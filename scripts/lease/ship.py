"""Join the weights a lease brought back, verify them, and ship them inside the package.

    python scripts/lease/ship.py --parts /work/.device/<files_at>  [--name spsr-x4] [--default]

1. joins spsr-x4.safetensors.part00.. (split on the device to fit 16 MiB per file) and checks the
   sha256 recorded on the device (results.tar: results/sha256.txt);
2. loads the file strictly with the product's loader (config from its metadata);
3. copies it to spsr_cli/weights/bundled/NAME.safetensors and writes its manifest entry
   (bundled source, sha256, size, config, licence, provenance), optionally as the default;
4. unpacks results.tar into runs/lease-results/ (eval JSONs, logs, SR images) for the model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
from pathlib import Path

from spsr_cli.weights.hub import sha256_file
from spsr_cli.weights.manifest import BundledSource, ModelEntry, packaged_manifest_path, read_manifest_file, write_json_atomic
from spsr_cli.weights.store import read_weights_file, load_weights_file

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=Path, required=True, help="folder with the .partNN files and results.tar")
    parser.add_argument("--name", default="spsr-x4")
    parser.add_argument("--default", action="store_true", help="make it the default model")
    parser.add_argument("--licence", default="BSD-3-Clause")
    args = parser.parse_args()

    results = REPO / "runs" / "lease-results"
    results.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.parts / "results.tar") as tar:
        tar.extractall(results.parent / "lease-results-tmp", filter="data")
    shutil.copytree(results.parent / "lease-results-tmp" / "results", results, dirs_exist_ok=True)
    shutil.rmtree(results.parent / "lease-results-tmp")
    expected = (results / "sha256.txt").read_text().split()[0]

    parts = sorted(args.parts.glob(f"{args.name}.safetensors.part*"))
    if not parts:
        raise SystemExit(f"no {args.name}.safetensors.part* files in {args.parts}")
    target = REPO / "spsr_cli" / "weights" / "bundled" / f"{args.name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.with_suffix(".joining")
    with open(joined, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    if sha256_file(joined) != expected:
        joined.unlink()
        raise SystemExit(f"joined file's sha256 differs from the device's {expected}: a part is missing or damaged")
    joined.replace(target)
    load_weights_file(target)  # strict: refuses anything that does not match its stored config
    loaded = read_weights_file(target)

    entry = ModelEntry(
        name=args.name, config=loaded.config, sha256=expected, size=target.stat().st_size,
        source=BundledSource(path=str(target.relative_to(REPO / "spsr_cli"))), licence=args.licence,
        provenance=loaded.metadata.get("source", "spsr train (see MODEL_CARD.md)"),
        description="SPSR x4 trained with spsr train on BSDS500+T91 from Real-ESRGAN x4plus; see MODEL_CARD.md",
    )
    manifest_path = REPO / "weights_manifest.json"
    data = read_manifest_file(manifest_path)
    data["models"] = [m for m in data["models"] if m.get("name") != args.name] + [entry.to_json()]
    if args.default:
        data["default"] = args.name
    write_json_atomic(manifest_path, data)
    for path in sorted(results.glob("*.json")):
        means = json.loads(path.read_text()).get("means", {})
        print(f"{path.stem}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items() if v is not None))
    print(f"shipped {target} ({entry.size / 1e6:.1f} MB, sha256 {expected})")
    assert packaged_manifest_path().is_file()


if __name__ == "__main__":
    main()
