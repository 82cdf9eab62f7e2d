"""One round of improving the shipped default model (run it in the background of every session).

    nohup nice -n 10 python scripts/improve_default.py --minutes 150 &   # train A then B, score, decide
    python scripts/improve_default.py --no-train                        # score and decide on the run as it is
    python scripts/improve_default.py --candidate FILE                  # decide on weights trained elsewhere

1. If no `spsr-x4` is shipped yet, the exact warm start of the RealSR DF2K RRDBNet is scored and
   shipped as version 1.
2. The run folder lives outside the source tree, under ``$SPSR_HOME/runs/improve-default/vN``
   (N: the shipped version it improves on), so a later session on the same machine resumes it;
   on a fresh machine the round starts again from the shipped weights.
3. Stage A (configs/spsr-x4-cpu-branch.yaml): the gradient branch alone learns the HR gradient map,
   for the config's step count. Stage B (configs/spsr-x4-cpu.yaml): fusion + branch with the SPSR-G
   objective, from stage A's EMA generator, until the time budget (less ``--reserve`` minutes for
   the decision) runs out. Both validate on the held-out training photographs; stage B keeps the
   EMA with the lowest validation LPIPS at a PSNR no more than 0.10 dB under v1's (``best.pt``).
4. The decision (skipped with ``--no-decide``): the validation rows of both stages join the learning
   curve (``training_curve.jsonl`` and MODEL_CARD.md); the candidate (stage B's ``best.pt``) is
   exported, scored on Set5/Set14, its gradient branch's share of the output measured on Set14, and it
   is shipped only when the shipping rule of ``scripts/release.py`` holds: validation LPIPS better than
   v1's on the same crops, Set14 LPIPS better, Set14 PSNR at most 0.10 dB lower. ``decision.json`` in
   the run folder records everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/release.py beside this file

import release  # noqa: E402

from spsr_cli.weights.manifest import spsr_home  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("improve_default")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="source tree to ship into (default: this checkout)")
    parser.add_argument("--name", default="spsr-x4")
    parser.add_argument(
        "--stage-a",
        type=Path,
        default=REPO / "configs" / "spsr-x4-cpu-branch.yaml",
        help="stage A config (gradient branch alone)",
    )
    parser.add_argument(
        "--stage-b",
        type=Path,
        default=REPO / "configs" / "spsr-x4-cpu.yaml",
        help="stage B config (fusion + branch, SPSR-G)",
    )
    parser.add_argument(
        "--run",
        type=Path,
        default=None,
        help="run folder (default: $SPSR_HOME/runs/improve-default/v<shipped version>)",
    )
    parser.add_argument("--minutes", type=float, default=150.0, help="wall-time budget of the whole round")
    parser.add_argument("--reserve", type=float, default=20.0, help="minutes kept for exporting, scoring, deciding")
    parser.add_argument(
        "--bench",
        type=Path,
        default=REPO.parent / "shared" / "data" / "bench",
        help="folder with Set5/ and Set14/ (HR, LR_bicubic_X4)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for both stages")
    parser.add_argument("--set-a", dest="overrides_a", action="append", default=[], help="override for stage A only")
    parser.add_argument("--set-b", dest="overrides_b", action="append", default=[], help="override for stage B only")
    parser.add_argument("--init-source", default="realsr-df2k", help="RRDBNet for the first ship (exact warm start)")
    parser.add_argument("--no-train", action="store_true", help="only export, score and decide on --run")
    parser.add_argument("--no-decide", action="store_true", help="only train")
    parser.add_argument("--candidate", type=Path, help="score and decide on this generator file (no training)")
    parser.add_argument(
        "--alphas",
        type=_alphas,
        default=(1.0,),
        help="network interpolation weights to try between the shipped generator (0) and the trained one (1), "
        "e.g. 0.25,0.5,0.75,1: each is scored on the validation crops and the lowest LPIPS at the PSNR floor "
        "becomes the candidate (default 1: the trained generator as it is)",
    )
    parser.add_argument(
        "--no-branch-share",
        dest="branch_share",
        action="store_false",
        help="skip measuring the gradient branch's share of the output on Set14 (two float32 passes)",
    )
    return parser.parse_args(argv)


def _alphas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alphas {text!r}: expected numbers separated by commas") from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"--alphas {text!r}: every weight must lie in [0, 1]")
    return values


def main(argv: list[str] | None = None, *, scorer=None) -> int:
    args = parse_args(argv)
    started = time.time()
    score = scorer or (lambda path: release.score_generator(path, args.bench))
    entry = release.current_entry(args.repo, args.name)
    if entry is None:
        warm_dir = args.run or spsr_home() / "runs" / "improve-default" / "warm-start"
        warm_dir.mkdir(parents=True, exist_ok=True)
        warm = release.warm_start_file(args.init_source, warm_dir / "warm-start.safetensors")
        scores = score(warm)
        entry = release.bundle_default(
            warm,
            repo=args.repo,
            name=args.name,
            metrics=scores,
            licence=release.LICENCE,
            description=release.WARM_START_DESCRIPTION,
            training={
                "init": args.init_source,
                "steps": 0,
                "note": "exact warm start, no SPSR training",
                "reference_scores": {f"warm start ({args.init_source})": scores},
            },
        )
        log.info("shipped the warm start as %s v%s: %s", args.name, entry["version"], scores)
    shipped = args.repo / "spsr_cli" / entry["source"]["path"]
    if args.candidate is not None:
        return decide(
            args,
            entry,
            args.candidate,
            training_summary={"note": f"trained elsewhere: {args.candidate.name}"},
            score=score,
        )
    run = args.run or spsr_home() / "runs" / "improve-default" / f"v{entry['version']}"
    run.mkdir(parents=True, exist_ok=True)
    if not args.no_train:
        deadline = started + 60.0 * (args.minutes - args.reserve)
        train_stages(args, run, shipped, deadline)
    if args.no_decide:
        return 0
    return decide_on_run(args, entry, run, score=score)


def train_stages(args: argparse.Namespace, run: Path, shipped: Path, deadline: float) -> None:
    """Stage A to its step count, then stage B until ``deadline`` (each resumed where it stopped)."""
    from spsr_cli.train.checkpoint import latest_checkpoint
    from spsr_cli.train.config import resolve_run_config
    from spsr_cli.train.loop import train

    stage_a, stage_b = run / "a-branch", run / "b-fusion"
    stages = ((stage_a, args.stage_a, shipped, args.overrides_a), (stage_b, args.stage_b, stage_a, args.overrides_b))
    for folder, config, init, own in stages:
        minutes = (deadline - time.time()) / 60.0
        if minutes < 1.0:
            log.info("no time left for %s", folder.name)
            return
        resume = latest_checkpoint(folder) is not None
        overrides = [*args.overrides, *own, f"train.time_limit_min={minutes:.2f}"]
        if not resume:
            overrides.append(f"train.init={init}")
        if folder == stage_b:
            baseline = stage_a_baseline(stage_a)
            if baseline is not None:  # v1's own validation PSNR (stage A does not change the SR output)
                overrides.append(f"validation.psnr_floor={baseline['psnr'] - MAX_VALIDATION_PSNR_DROP:.4f}")
        cfg = resolve_run_config(
            config_path=None if resume else config, overrides=overrides, run_dir=folder, resume=resume
        )
        done = checkpoint_step(latest_checkpoint(folder))
        if done >= cfg.train.steps:
            log.info("%s already finished (%d steps)", folder.name, done)
            continue
        log.info("%s %s for at most %.1f minutes", "resuming" if resume else "starting", folder.name, minutes)
        train(cfg, folder, resume=resume)


#: Stage B's checkpoint selection keeps validation PSNR within this of v1's (the shipping rule's Set14 margin).
MAX_VALIDATION_PSNR_DROP = 0.10


def checkpoint_step(path: Path | None) -> int:
    """Step number of a ``step_NNNNNNNN.pt`` checkpoint (0 for None)."""
    return int(path.stem.split("_")[1]) if path is not None else 0


def validation_rows(run_dir: Path) -> list[dict]:
    """The run's validation rows (``log.jsonl``), in order."""
    log_file = run_dir / "log.jsonl"
    if not log_file.is_file():
        return []
    rows = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == "validation"]


def stage_a_baseline(stage_a: Path) -> dict | None:
    """v1's validation scores: stage A's first validation row (its SR output is v1's)."""
    rows = validation_rows(stage_a)
    return rows[0] if rows else None


def decide_on_run(args: argparse.Namespace, entry: dict, run: Path, *, score) -> int:
    """Grow the learning curve, export stage B's best validated EMA generator (else its newest
    checkpoint's; with ``--alphas``, the blend of the newest with the shipped generator chosen on
    validation), score it, measure its branch share and ship it when the rule holds."""
    import torch

    from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint
    from spsr_cli.train.config import TrainConfig
    from spsr_cli.train.loop import BEST_FILE
    from spsr_cli.weights.store import write_generator_file

    stage_a, stage_b = run / "a-branch", run / "b-fusion"
    release.update_curve(args.repo, curve_rows(args.repo, entry, run))
    interpolate = tuple(args.alphas) != (1.0,)
    if (stage_b / BEST_FILE).is_file() and not interpolate:
        state = torch.load(stage_b / BEST_FILE, map_location="cpu", weights_only=True)
    else:
        checkpoint = latest_checkpoint(stage_b)
        if checkpoint is None:
            log.error("%s holds no checkpoint: nothing to decide on", stage_b)
            return 1
        state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    baseline = stage_a_baseline(stage_a)
    validation = state.get("validation") or next(  # a checkpoint, not best.pt: its step's validation row
        (r for r in validation_rows(stage_b) if r["step"] == state["step"]), None
    )
    weights, source, interpolation = state["ema"], f"spsr train {run.name}/b-fusion step {state['step']} (EMA)", None
    if interpolate:  # the newest EMA is the trained end; the blend chosen on validation keeps the PSNR floor
        shipped = args.repo / "spsr_cli" / entry["source"]["path"]
        interpolation = interpolation_sweep(args.alphas, shipped, state["ema"], cfg, validation, baseline)
        weights, validation = interpolation.pop("weights"), interpolation["chosen"]
        source += f", interpolated with {args.name} v{entry['version']} at alpha {validation['alpha']}"
    suffix = "" if interpolation is None else f"-alpha{interpolation['chosen']['alpha']:g}"
    candidate = run / f"candidate-step{state['step']}{suffix}.safetensors"
    write_generator_file(
        candidate,
        weights,
        cfg.spsr_config(),
        source=source,
        licence=release.LICENCE,
        extra_metadata={"training_step": str(state["step"])},
    )
    val_ok, val_why = release.validation_improves(validation, baseline)
    log.info("candidate %s: %s", candidate.name, val_why)
    summary = {
        "stage_a": release.run_summary(stage_a) if (stage_a / "log.jsonl").is_file() else None,
        "stage_b": release.run_summary(stage_b) if (stage_b / "log.jsonl").is_file() else None,
        "hardware": release.hardware_summary(),
        "data": [str(d) for d in cfg.data.hr_dirs],
        "selected_step": state["step"],
        "validation": validation,
        "validation_v1": baseline,
        "stage_a_final_validation": (validation_rows(stage_a) or [None])[-1],
        "interpolation": interpolation,
    }
    summary["steps"] = sum(int((summary[k] or {}).get("steps", 0)) for k in ("stage_a", "stage_b"))
    if args.branch_share:
        summary["branch_share_set14"] = release.branch_share(candidate, args.bench)
        log.info("branch share on Set14: %s", summary["branch_share_set14"])
    return decide(
        args,
        entry,
        candidate,
        training_summary=summary,
        score=score,
        validation_ok=val_ok,
        decision_file=run / "decision.json",
    )


def interpolation_sweep(
    alphas: tuple[float, ...], shipped: Path, tuned: dict, cfg, tuned_validation: dict | None, baseline: dict | None
) -> dict:
    """Score every blend ``shipped + alpha * (tuned - shipped)`` on the run's validation crops.

    Returns ``rows`` (alpha and the validation scores of each), ``chosen`` (the row of
    :func:`release.choose_alpha` at v1's validation PSNR less ``MAX_VALIDATION_PSNR_DROP``, or the
    smallest alpha when none reaches it), ``psnr_floor`` and ``weights`` (the chosen state dict).
    ``alpha`` 1 reuses ``tuned_validation`` when given (the same network, already scored).
    """
    import torch

    from spsr_cli.train.loop import lpips_or_none, validation_pairs
    from spsr_cli.train.validation import validate
    from spsr_cli.weights.layouts import build_generator
    from spsr_cli.weights.store import read_weights_file

    base = read_weights_file(shipped).state_dict
    pairs = validation_pairs(cfg)
    lpips_net = lpips_or_none() if cfg.validation.lpips else None
    if not pairs:
        raise SystemExit("the run's config names no validation crops: the interpolation cannot be chosen")
    rows = []
    for alpha in sorted(set(alphas)):
        if alpha == 1.0 and tuned_validation is not None:
            scores = {k: v for k, v in tuned_validation.items() if k not in ("event", "time", "best", "step")}
        else:
            model = build_generator(release.interpolate_generator(base, tuned, alpha), cfg.spsr_config()).eval()
            scores = validate(model, pairs, device=torch.device("cpu"), scale=cfg.model.scale, lpips_net=lpips_net)
        rows.append({"alpha": alpha, **scores})
        log.info("alpha %.2f: validation PSNR %.3f dB, LPIPS %s", alpha, scores["psnr"], scores.get("lpips"))
    floor = (baseline["psnr"] - MAX_VALIDATION_PSNR_DROP) if baseline else float("-inf")
    chosen = release.choose_alpha(rows, floor) or rows[0]
    log.info("interpolation: alpha %.2f chosen (validation PSNR floor %.3f dB)", chosen["alpha"], floor)
    weights = release.interpolate_generator(base, tuned, chosen["alpha"])  # one blend held at a time
    return {"rows": rows, "chosen": chosen, "psnr_floor": floor, "weights": weights}


def curve_rows(repo: Path, entry: dict, run: Path) -> list[dict]:
    """This round's validation rows, numbered by total generator steps across every round so far."""
    path = repo / release.CURVE_FILE
    earlier = (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.is_file()
        else []
    )
    round_name = f"{entry['name']} v{entry['version']} -> v{entry['version'] + 1}"
    started = run_started(run / "a-branch")
    if started is not None:  # a run folder lost with its machine starts again: each run its own rows
        round_name += f", run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))}"
    offset = max((r["total_steps"] for r in earlier if r["round"] != round_name), default=0)
    rows, stage_a_steps = [], 0
    for stage in ("a-branch", "b-fusion"):
        for row in validation_rows(run / stage):
            metrics = {k: v for k, v in row.items() if k not in ("event", "time", "best")}
            rows.append(
                {"round": round_name, "stage": stage, **metrics, "total_steps": offset + stage_a_steps + row["step"]}
            )
        if stage == "a-branch":
            stage_a_steps = checkpoint_step_of(run / stage)
    return rows


def run_started(run_dir: Path) -> float | None:
    """Unix time of the first ``start`` event in a run folder's ``log.jsonl`` (None without one)."""
    log_file = run_dir / "log.jsonl"
    if not log_file.is_file():
        return None
    for line in log_file.read_text(encoding="utf-8").splitlines():
        if line.strip() and (row := json.loads(line)).get("event") == "start":
            return float(row["time"])
    return None


def checkpoint_step_of(run_dir: Path) -> int:
    from spsr_cli.train.checkpoint import latest_checkpoint

    return checkpoint_step(latest_checkpoint(run_dir)) if run_dir.is_dir() else 0


def decide(
    args: argparse.Namespace,
    entry: dict,
    candidate: Path,
    *,
    training_summary: dict,
    score=None,
    validation_ok: bool = True,
    decision_file: Path | None = None,
) -> int:
    """Score ``candidate`` and ship it when it beats the shipped model's recorded numbers (and, for a
    run of this script, its validation scores: ``validation_ok``)."""
    score = score or (lambda path: release.score_generator(path, args.bench))
    scores = score(candidate)
    better, why = release.is_improvement(scores, entry.get("metrics"))
    ships = better and validation_ok
    log.info(
        "candidate %s: %s%s -> %s",
        candidate.name,
        why,
        "" if validation_ok else "; validation did not improve",
        "shipping" if ships else "keeping the shipped model",
    )
    if decision_file is not None:
        from spsr_cli.files import write_json_atomic

        write_json_atomic(
            decision_file,
            {
                "candidate": str(candidate),
                "scores": scores,
                "ships": ships,
                "why": why,
                "validation_ok": validation_ok,
                "training": training_summary,
            },
        )
    if ships:
        previous = entry.get("training", {})
        total = int(training_summary.get("steps", 0)) + int(previous.get("total_steps", previous.get("steps", 0)))
        training = {
            "init": f"{args.name} v{entry['version']}",
            "steps": total,
            "total_steps": total,
            "this_round": training_summary,
            "reference_scores": {
                **previous.get("reference_scores", {}),
                f"{args.name} v{entry['version']} (previous)": entry.get("metrics", {}),
            },
        }
        new = release.bundle_default(
            candidate,
            repo=args.repo,
            name=args.name,
            metrics=scores,
            training=training,
            licence=release.LICENCE,
            description=release.DESCRIPTION,
        )
        log.info("shipped %s v%s", args.name, new["version"])
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.exit(main())
