"""Join the generator a GPU lease brought back, verify it, and ship it if it beats the shipped model.

    python scripts/lease/ship.py --parts FILES_AT [--bench ../shared/data/bench]

1. joins spsr-x4.safetensors.part00.. (split on the device to fit the transfer limits) and checks
   the sha256 the device recorded in sha256.txt;
2. hands the file to scripts/improve_default.py --candidate, which scores it on Set5/Set14 here
   and ships it (manifest entry, version + 1, MODEL_CARD.md) only under the shipping rule.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))


def join_parts(parts_dir: Path, target: Path) -> Path:
    """Concatenate the parts into ``target`` and check the device's sha256 (SystemExit if it differs)."""
    from spsr_cli.files import sha256_file

    parts = sorted(parts_dir.glob("spsr-x4.safetensors.part*"))
    if not parts:
        raise SystemExit(f"no spsr-x4.safetensors.part* files in {parts_dir}")
    expected = (parts_dir / "sha256.txt").read_text().split()[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    if sha256_file(target) != expected:
        target.unlink()
        raise SystemExit(f"the joined file's sha256 differs from the device's {expected}: a part is missing or damaged")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=Path, required=True, help="the folder the device's $OUT came back to")
    parser.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "data" / "bench")
    args = parser.parse_args(argv)
    joined = join_parts(args.parts, REPO / "runs" / "lease" / "candidate.safetensors")
    import improve_default

    return improve_default.main(["--candidate", str(joined), "--bench", str(args.bench), "--run", str(joined.parent)])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.exit(main())
