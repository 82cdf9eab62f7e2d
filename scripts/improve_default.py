"""One round of improving the shipped default model (run it in any session; CPU or GPU).

    python scripts/improve_default.py --minutes 100            # train, evaluate, re-ship if better
    python scripts/improve_default.py --run runs/x --no-train  # evaluate an existing run and decide
    python scripts/improve_default.py --candidate FILE         # decide on weights trained elsewhere (GPU lease)

1. If no `spsr-x4` is shipped yet, the exact warm start of the RealSR DF2K RRDBNet is scored and
   shipped as version 1.
2. Training continues from the shipped generator (fresh discriminators, warmed up alone for
   `train.d_warmup_steps`) with configs/spsr-x4-cpu.yaml for `--minutes` of wall time; a run folder
   that already holds checkpoints is resumed instead.
3. The run's EMA generator is exported (float16) and scored on Set5/Set14 (spsr-paper protocol).
4. It is shipped (manifest entry, version + 1, MODEL_CARD.md table) only when Set14 LPIPS improves
   and Set14 PSNR drops by at most 0.05 dB against the shipped model's recorded numbers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("improve_default")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="source tree to ship into (default: this checkout)")
    parser.add_argument("--name", default="spsr-x4")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "spsr-x4-cpu.yaml")
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "improve-default")
    parser.add_argument("--minutes", type=float, default=100.0, help="training wall-time budget")
    parser.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "data" / "bench",
                        help="folder with Set5/ and Set14/ (HR, LR_bicubic_X4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--init-source", default="realsr-df2k", help="RRDBNet for the first ship (exact warm start)")
    parser.add_argument("--no-train", action="store_true", help="only export, score and decide on --run")
    parser.add_argument("--candidate", type=Path, help="score and decide on this generator file (no training)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, scorer=None) -> int:
    from spsr_cli.train import release
    from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint
    from spsr_cli.train.config import TrainConfig, resolve_run_config
    from spsr_cli.train.loop import train
    from spsr_cli.weights.store import write_generator_file

    args = parse_args(argv)
    score = scorer or (lambda path: release.score_generator(path, args.bench))
    args.run.mkdir(parents=True, exist_ok=True)
    entry = release.current_entry(args.repo, args.name)
    if entry is None:
        warm = release.warm_start_file(args.init_source, args.run / "warm-start.safetensors")
        scores = score(warm)
        entry = release.bundle_default(
            warm, repo=args.repo, name=args.name, metrics=scores, licence=release.LICENCE,
            description=release.DESCRIPTION,
            training={"init": args.init_source, "steps": 0, "note": "exact warm start, no SPSR training",
                      "reference_scores": {f"warm start ({args.init_source})": scores}})
        log.info("shipped the warm start as %s v%s: %s", args.name, entry["version"], scores)
    shipped = args.repo / "spsr_cli" / entry["source"]["path"]

    if args.candidate is not None:
        return decide(args, entry, args.candidate, training_summary={"note": f"trained elsewhere: {args.candidate.name}"},
                      score=score)
    if not args.no_train:
        resume = latest_checkpoint(args.run) is not None
        overrides = [f"train.time_limit_min={args.minutes}", *args.overrides]
        if not resume:
            overrides.append(f"train.init={shipped}")
        cfg = resolve_run_config(config_path=None if resume else args.config, overrides=overrides,
                                 run_dir=args.run, resume=resume)
        train(cfg, args.run, resume=resume)

    checkpoint = latest_checkpoint(args.run)
    if checkpoint is None:
        log.error("%s holds no checkpoint: nothing to evaluate", args.run)
        return 1
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    candidate = args.run / f"candidate-step{state['step']}.safetensors"
    write_generator_file(candidate, state["ema"], cfg.spsr_config(), source=f"spsr train {args.run.name} step {state['step']} (EMA)",
                         licence=release.LICENCE, extra_metadata={"training_step": str(state["step"])})
    summary = release.run_summary(args.run)
    summary.update(hardware=release.hardware_summary(), objective=f"SPSR-G ({summary['perceptual']})",
                   data=[str(d) for d in cfg.data.hr_dirs], config=cfg.to_dict()["train"])
    return decide(args, entry, candidate, training_summary=summary, score=score)


def decide(args: argparse.Namespace, entry: dict, candidate: Path, *, training_summary: dict, score=None) -> int:
    """Score ``candidate`` and ship it when it beats the shipped model's recorded numbers."""
    from spsr_cli.train import release

    score = score or (lambda path: release.score_generator(path, args.bench))
    scores = score(candidate)
    better, why = release.is_improvement(scores, entry.get("metrics"))
    log.info("candidate %s: %s -> %s", candidate.name, why, "shipping" if better else "keeping the shipped model")
    if better:
        previous = entry.get("training", {})
        total = int(training_summary.get("steps", 0)) + int(previous.get("total_steps", previous.get("steps", 0)))
        training = {
            "init": f"{args.name} v{entry['version']}", "steps": total, "total_steps": total,
            "this_round": training_summary,
            "reference_scores": {**previous.get("reference_scores", {}),
                                 f"{args.name} v{entry['version']} (previous)": entry.get("metrics", {})},
        }
        new = release.bundle_default(candidate, repo=args.repo, name=args.name, metrics=scores, training=training,
                                     licence=release.LICENCE, description=release.DESCRIPTION)
        log.info("shipped %s v%s", args.name, new["version"])
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.exit(main())
