"""Bundle trained neural structure extractors into the package and register them in the manifest.

    python scripts/ship_nse.py runs/nse-contrastive:nse-contrastive runs/nse-jigsaw:nse-jigsaw

For each RUN:NAME: the run's newest checkpoint (an ``spsr train nse`` run that finished its
schedule and was evaluated on its held-out images) is written as float32 safetensors to
``spsr_cli/weights/bundled/NAME.safetensors`` (config, task, held-out evaluation in the
metadata), and ``weights_manifest.json``'s ``auxiliary`` list gets (or replaces) the entry
NAME (kind ``structure-extractor``, sha256, size, config, accuracy, training time), so that
``loss.nse: NAME`` loads it. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint
from spsr_cli.train.export import write_nse_from_checkpoint
from spsr_cli.weights.nse_files import AUX_KIND

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "weights_manifest.json"
BUNDLED = ROOT / "spsr_cli" / "weights" / "bundled"
LICENCE = "MIT (trained from scratch by spsr-cli); training images BSDS500 and T91, research use; see MODEL_CARD.md"
METRIC = {
    "contrastive": "top-1 accuracy of the predicted vector among the positive and 16 negatives (InfoNCE, "
    "cosine x 64), mean over the horizontal, vertical and cross variants",
    "jigsaw": "accuracy of the 24-way permutation classifier on 2x2 grids of non-overlapping vectors",
}


def ship(run: Path, name: str) -> dict:
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise SystemExit(f"{run} holds no checkpoint")
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    evaluation = state.get("evaluation")
    if (
        state.get("kind") != "nse"
        or not evaluation
        or evaluation["step"] != state["step"]
        or state["step"] != cfg["train"]["steps"]
    ):
        raise SystemExit(f"{checkpoint}: not a finished, evaluated spsr train nse run")
    method = cfg["task"]["method"]
    source = f"spsr train nse --method {method} (configs/nse-{method}.yaml), step {state['step']}"
    out = write_nse_from_checkpoint(state, BUNDLED / f"{name}.safetensors", source=source, licence=LICENCE)
    return {
        "name": name,
        "kind": AUX_KIND,
        "method": method,
        "description": f"Neural structure extractor (TPAMI SPSR, NSE-{'P' if method == 'contrastive' else 'J'}) "
        f"trained by {method} self-supervision; the structure losses of loss.preset "
        f"spsr-{'p' if method == 'contrastive' else 'j'} use it. See MODEL_CARD.md.",
        "licence": LICENCE,
        "provenance": source,
        "config": cfg["model"],
        "accuracy": {
            "held_out": round(evaluation["accuracy"], 4),
            "metric": METRIC[method],
            "held_out_crops": int(evaluation["crops"]),
            **{k: round(v, 4) for k, v in evaluation.items() if k.startswith("accuracy_")},
        },
        "training": {
            "steps": state["step"],
            "minutes": round(state["train_seconds"] / 60, 1),
            "threads": cfg["train"]["threads"],
            "images": state.get("split"),
            "note": "wall-clock time of the training steps on one CPU thread (nice 10) of a 2-core "
            "machine shared with other jobs; evaluation and checkpoints excluded",
        },
        "size": out.size,
        "source": {"type": "bundled", "path": f"weights/bundled/{name}.safetensors", "sha256": out.sha256},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="RUN:NAME")
    args = parser.parse_args(argv)
    text = MANIFEST.read_text(encoding="utf-8")
    data = json.loads(text)
    if json.dumps(data, indent=2) + "\n" != text:
        raise SystemExit(f"{MANIFEST} is not in the json.dumps(indent=2) layout; edit it by hand instead")
    for pair in args.pairs:
        run, name = pair.rsplit(":", 1)
        entry = ship(Path(run), name)
        aux = [a for a in data["auxiliary"] if a.get("name") != name]
        data["auxiliary"] = aux + [entry]
        print(json.dumps(entry, indent=1))
    tmp = MANIFEST.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(MANIFEST)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
