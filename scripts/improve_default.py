"""One round of improving the shipped default model (run it in the background of every session).

    nohup nice -n 10 python scripts/improve_default.py --minutes 150 &   # warm up, train, score, decide
    python scripts/improve_default.py --no-train                        # score and decide on the run as it is
    python scripts/improve_default.py --candidate FILE                  # decide on weights trained elsewhere

1. If no `spsr-x4` is shipped yet, the exact warm start of the RealSR DF2K RRDBNet is scored and
   shipped as version 1.
2. The run folder lives outside the source tree, under ``$SPSR_HOME/runs/improve-default/vN``
   (N: the shipped version it improves on), so a later session on the same machine resumes it
   (generator, EMA, discriminators and optimiser states are in its checkpoints); on a fresh machine
   the round starts again from the shipped weights, or from ``--init FILE``.
3. ``baselines.json``: v1 (the exact warm start) and the shipped version scored once on the
   stage's validation crops. The PSNR floor of the round is the higher of their validation PSNRs
   less ``MAX_VALIDATION_PSNR_DROP``.
4. Stage W (configs/spsr-x4-cpu-whole.yaml), the whole network with per-part learning rates:
   ``w-warmup`` trains the fresh discriminators alone for the config's ``train.d_warmup_steps``
   (the generator frozen, so its validation row is the starting generator's own); optional
   ``--trial NAME=OVERRIDE,...`` runs fork from it for ``--trial-steps`` steps each and the best
   (lowest validation LPIPS at the floor) continues; ``w-whole`` trains until the time budget
   (less ``--reserve`` minutes for the decision) runs out, keeping the EMA with the lowest
   validation LPIPS at the floor as ``best.pt``.
5. The decision (skipped with ``--no-decide``): the validation rows join the learning curve
   (``training_curve.jsonl`` and MODEL_CARD.md); the candidate (``best.pt``) is exported, scored on
   Set5/Set14, its gradient branch's share of the output measured on Set14, and it is shipped only
   when the rule holds: validation LPIPS better than the shipped version's by at least the
   measured noise (the largest LPIPS step between neighbouring validations of the flat end of the
   curve) and at least ``MIN_VALIDATION_GAIN``, validation PSNR at most 0.10 dB under the shipped
   version's, and ``scripts/release.py``'s Set14 rule. ``decision.json`` records everything.
"""

from __future__ import annotations

import argparse
import dataclasses
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
        "--config",
        type=Path,
        default=REPO / "configs" / "spsr-x4-cpu-whole.yaml",
        help="stage W config (the whole network, per-part learning rates)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="generator file a fresh run starts from (default: the shipped model), e.g. a candidate of ../shared",
    )
    parser.add_argument(
        "--trial",
        dest="trials",
        action="append",
        type=_trial,
        default=[],
        help="NAME=OVERRIDE[,OVERRIDE...]: a short trial forked from the warm-up (repeatable); the best continues",
    )
    parser.add_argument("--trial-steps", type=int, default=200, help="generator steps of each trial")
    parser.add_argument(
        "--no-v1-baseline",
        dest="v1_baseline",
        action="store_false",
        help="score only the shipped model for baselines.json (not v1's exact warm start)",
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
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (every run)")
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


def _trial(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name.isidentifier() or "=" not in overrides:
        raise argparse.ArgumentTypeError(
            f"--trial {text!r}: expected NAME=section.key=value[,section.key=value...], e.g. "
            "parts=train.lr_parts.trunk=0.5,train.lr_parts.fusion=5"
        )
    return name, [o for o in overrides.split(",") if o]


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
        train_round(args, run, shipped, deadline)
    if args.no_decide:
        return 0
    return decide_on_run(args, entry, run, score=score)


#: Stage W's run folders inside the round's folder, in the order they train.
WARMUP, WHOLE = "w-warmup", "w-whole"
BASELINES_FILE = "baselines.json"
#: The round keeps validation PSNR within this of the shipped version's and v1's (the Set14 rule's margin).
MAX_VALIDATION_PSNR_DROP = 0.10
#: The smallest validation LPIPS gain that ships, whatever the measured noise.
MIN_VALIDATION_GAIN = 0.002
#: How many validations at the end of the curve the noise is measured over.
NOISE_WINDOW = 4


def train_round(args: argparse.Namespace, run: Path, shipped: Path, deadline: float) -> None:
    """Baselines, the discriminators' warm-up, the optional trials, then the whole network until
    ``deadline``; every stage resumes where an earlier session on this machine stopped."""
    from spsr_cli.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    baselines = ensure_baselines(args, run, shipped, cfg)
    floor = psnr_floor(baselines)
    common = [*args.overrides, *([f"validation.psnr_floor={floor:.4f}"] if baselines else [])]
    cadence = [f"validation.every={cfg.validation.every}", f"train.checkpoint_every={cfg.train.checkpoint_every}"]
    warm = cfg.train.d_warmup_steps
    warm_overrides = [f"train.steps={warm}", f"validation.every={warm}", f"train.checkpoint_every={warm}"]
    init = args.init or shipped
    if warm and not run_stage(run / WARMUP, args.config, [*common, *warm_overrides], deadline, init=init):
        return
    start = run / WARMUP if warm else None
    whole = run / WHOLE
    if not whole.is_dir() and args.trials:
        for name, overrides in args.trials:
            folder = run / f"w-trial-{name}"
            if start is not None:
                fork(start, folder)
            steps = [*cadence, f"train.steps={warm + args.trial_steps}", *overrides]
            if not run_stage(folder, args.config, [*common, *steps], deadline, init=init):
                return
        start = run / best_trial(run, [name for name, _ in args.trials], floor)
        log.info("trials: %s continues", start.name)
    if not whole.is_dir() and start is not None:
        fork(start, whole)
    run_stage(whole, args.config, [*common, *cadence, f"train.steps={cfg.train.steps}"], deadline, init=init)


def run_stage(folder: Path, config: Path, overrides: list[str], deadline: float, *, init: Path) -> bool:
    """Train (or resume) the run in ``folder`` until its step count or ``deadline``; False when no time is left."""
    from spsr_cli.train.checkpoint import latest_checkpoint
    from spsr_cli.train.config import resolve_run_config
    from spsr_cli.train.loop import train

    minutes = (deadline - time.time()) / 60.0
    if minutes < 1.0:
        log.info("no time left for %s", folder.name)
        return False
    resume = latest_checkpoint(folder) is not None
    overrides = [*overrides, f"train.time_limit_min={minutes:.2f}"]
    if not resume:
        overrides.append(f"train.init={init}")
    cfg = resolve_run_config(config_path=None if resume else config, overrides=overrides, run_dir=folder, resume=resume)
    done = checkpoint_step(latest_checkpoint(folder))
    if done >= cfg.train.steps:
        log.info("%s already finished (%d steps)", folder.name, done)
        return True
    log.info("%s %s for at most %.1f minutes", "resuming" if resume else "starting", folder.name, minutes)
    train(cfg, folder, resume=resume)
    return checkpoint_step(latest_checkpoint(folder)) >= cfg.train.steps


def fork(source: Path, target: Path) -> None:
    """Start ``target`` as a copy of the run ``source`` (its checkpoints, discriminators and logs)."""
    import shutil

    if target.is_dir():
        return
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    partial.rename(target)


def best_trial(run: Path, names: list[str], floor: float) -> str:
    """The trial folder whose last validation has the lowest LPIPS at PSNR >= ``floor`` (else the highest PSNR)."""

    def key(name: str) -> tuple:
        last = (validation_rows(run / f"w-trial-{name}") or [{"psnr": float("-inf")}])[-1]
        return (last["psnr"] >= floor, -last.get("lpips", float("inf")) if last["psnr"] >= floor else last["psnr"])

    return f"w-trial-{max(names, key=key)}"


def ensure_baselines(args: argparse.Namespace, run: Path, shipped: Path, cfg) -> dict:
    """``baselines.json`` of the round: the shipped version's (and v1's) validation scores on ``cfg``'s crops."""
    from spsr_cli.files import write_json_atomic
    from spsr_cli.train.loop import validation_pairs

    path = run / BASELINES_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if not validation_pairs(cfg):
        log.warning("the config names no validation crops: the round has no baselines and no PSNR floor")
        return {}
    files = {"shipped": shipped}
    if args.v1_baseline:
        files["v1"] = release.warm_start_file(args.init_source, run / "v1-warm-start.safetensors")
    baselines = {}
    for label, file in files.items():
        baselines[label] = {"file": str(file), **validation_scores(file, cfg)}
        log.info("baseline %s: %s", label, baselines[label])
    write_json_atomic(path, baselines)
    return baselines


def validation_scores(path: Path, cfg) -> dict:
    """A generator file's validation scores on ``cfg``'s crops (float32, as during training)."""
    import torch

    from spsr_cli.train.loop import lpips_or_none, validation_pairs
    from spsr_cli.train.validation import validate
    from spsr_cli.weights.loader import load_generator

    model = load_generator(path)  # float32, eval mode, the file's own config
    pairs = validation_pairs(cfg)
    lpips_net = lpips_or_none() if cfg.validation.lpips else None
    scale = cfg.model.scale
    return {"crops": len(pairs), **validate(model, pairs, device=torch.device("cpu"), scale=scale, lpips_net=lpips_net)}


def psnr_floor(baselines: dict) -> float:
    """The round's validation PSNR floor: the higher of v1's and the shipped version's, less the allowed drop
    (no floor without baselines)."""
    return max((b["psnr"] for b in baselines.values()), default=float("-inf")) - MAX_VALIDATION_PSNR_DROP


def validation_noise(rows: list[dict], window: int = NOISE_WINDOW) -> float | None:
    """The largest |LPIPS| step between neighbouring validations among the last ``window`` (None with fewer)."""
    values = [r["lpips"] for r in rows if r.get("lpips") is not None][-window:]
    if len(values) < window:
        return None
    return max(abs(b - a) for a, b in zip(values, values[1:]))


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


def decide_on_run(args: argparse.Namespace, entry: dict, run: Path, *, score) -> int:
    """Grow the learning curve, export the whole-network stage's best validated EMA generator (else
    its newest checkpoint's; with ``--alphas``, the blend of the newest with the shipped generator
    chosen on validation), score it, measure its branch share and ship it when the rule holds."""
    import torch

    from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint
    from spsr_cli.train.config import TrainConfig
    from spsr_cli.train.loop import BEST_FILE
    from spsr_cli.weights.store import write_generator_file

    whole = run / WHOLE
    release.update_curve(args.repo, curve_rows(args.repo, entry, run))
    interpolate = tuple(args.alphas) != (1.0,)
    if (whole / BEST_FILE).is_file() and not interpolate:
        state = torch.load(whole / BEST_FILE, map_location="cpu", weights_only=True)
    else:
        checkpoint = latest_checkpoint(whole)
        if checkpoint is None:
            log.error("%s holds no checkpoint: nothing to decide on", whole)
            return 1
        state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    baselines_file = run / BASELINES_FILE
    baselines = json.loads(baselines_file.read_text(encoding="utf-8")) if baselines_file.is_file() else {}
    floor = psnr_floor(baselines)
    validation = state.get("validation") or next(  # a checkpoint, not best.pt: its step's validation row
        (r for r in validation_rows(whole) if r["step"] == state["step"]), None
    )
    weights, source, interpolation = state["ema"], f"spsr train {run.name}/{WHOLE} step {state['step']} (EMA)", None
    if interpolate:  # the newest EMA is the trained end; the blend chosen on validation keeps the PSNR floor
        shipped = args.repo / "spsr_cli" / entry["source"]["path"]
        interpolation = interpolation_sweep(args.alphas, shipped, state["ema"], cfg, validation, floor)
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
    noise = validation_noise(validation_rows(whole))
    val_ok, val_why = release.validation_improves(
        validation,
        baselines.get("shipped"),
        min_gain=max(noise or 0.0, MIN_VALIDATION_GAIN),
        max_psnr_drop=MAX_VALIDATION_PSNR_DROP,
    )
    log.info("candidate %s: %s", candidate.name, val_why)
    stages = [
        d for d in sorted(run.iterdir()) if d.is_dir() and d.name.startswith("w-") and (d / "log.jsonl").is_file()
    ]
    summary = {
        "stages": {d.name: release.run_summary(d) for d in stages},
        "lr_parts": dataclasses.asdict(cfg.train.lr_parts),
        "hardware": release.hardware_summary(),
        "data": [str(d) for d in cfg.data.hr_dirs],
        "selected_step": state["step"],
        "validation": validation,
        "validation_baselines": baselines,
        "validation_noise": noise,
        "interpolation": interpolation,
        # generator steps behind the selected EMA (the warm-up trains only the discriminators)
        "steps": max(0, state["step"] - cfg.train.d_warmup_steps),
        "loop_steps": checkpoint_step(latest_checkpoint(whole)),
    }
    if summary["steps"] == 0:  # the best validation was the starting generator: no rate of this round made it
        summary["lr_parts"] = None
    if args.init is not None:  # a candidate trained elsewhere from the shipped version: its steps count too
        from spsr_cli.files import sha256_file
        from spsr_cli.weights.store import read_weights_file

        metadata = read_weights_file(args.init).metadata
        earlier = int(metadata.get("training_step", 0))
        summary["init"] = f"{args.init.name} ({earlier} steps from {args.name} v{entry['version']})"
        summary["init_file"] = {
            "path": str(args.init),
            "sha256": sha256_file(args.init),
            "source": metadata.get("source"),
        }
        summary["steps"] += earlier
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
    alphas: tuple[float, ...], shipped: Path, tuned: dict, cfg, tuned_validation: dict | None, floor: float
) -> dict:
    """Score every blend ``shipped + alpha * (tuned - shipped)`` on the run's validation crops.

    Returns ``rows`` (alpha and the validation scores of each), ``chosen`` (the row of
    :func:`release.choose_alpha` at the round's validation PSNR ``floor``, or the smallest alpha
    when none reaches it), ``psnr_floor`` and ``weights`` (the chosen state dict).
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
    chosen = release.choose_alpha(rows, floor) or rows[0]
    log.info("interpolation: alpha %.2f chosen (validation PSNR floor %.3f dB)", chosen["alpha"], floor)
    weights = release.interpolate_generator(base, tuned, chosen["alpha"])  # one blend held at a time
    return {"rows": rows, "chosen": chosen, "psnr_floor": floor, "weights": weights}


def curve_rows(repo: Path, entry: dict, run: Path) -> list[dict]:
    """This round's validation rows, numbered by total loop steps across every round so far: the
    path the round took (``w-whole``, which holds its warm-up's and winning trial's rows) and each
    other trial's own rows after the warm-up."""
    path = repo / release.CURVE_FILE
    earlier = (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.is_file()
        else []
    )
    round_name = f"{entry['name']} v{entry['version']} -> v{entry['version'] + 1}"
    started = run_started(run / WARMUP) or run_started(run / WHOLE)
    if started is not None:  # a run folder lost with its machine starts again: each run its own rows
        round_name += f", run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))}"
    offset = max((r["total_steps"] for r in earlier if r["round"] != round_name), default=0)
    copied = {(r["step"], r.get("time")) for r in validation_rows(run / WHOLE)}  # its warm-up's and trial's rows
    rows = []
    for folder in [run / WHOLE, *sorted(run.glob("w-trial-*"))]:
        for row in validation_rows(folder):
            if folder.name != WHOLE and (row["step"], row.get("time")) in copied:
                continue
            metrics = {k: v for k, v in row.items() if k not in ("event", "time", "best")}
            rows.append({"round": round_name, "stage": folder.name, **metrics, "total_steps": offset + row["step"]})
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
            "init": training_summary.get("init", f"{args.name} v{entry['version']}"),
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
