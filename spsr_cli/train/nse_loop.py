"""The NSE training loop: ``spsr train nse --method contrastive|jigsaw``.

Adam on the NSE and the task's head (:mod:`spsr_cli.train.nse_tasks`), on random augmented
HR crops. Batches and task samples of step ``s`` are a pure function of ``(seed, s)``, so a
resumed run repeats the uninterrupted one. Evaluation uses held-out images of the same
folders: a file is held out when ``sha256(file name) mod 100 < data.holdout_percent``
(:func:`spsr_cli.train.data.is_held_out`), and ``split.json`` lists both shares.

The run folder (``config.yaml``, ``log.jsonl``, checkpoints), the resume and thread rules and
the divergence check are :mod:`spsr_cli.train.run_folder`'s, shared with the generator's loop.
Export: :func:`spsr_cli.train.export.export_nse`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from spsr_cli.errors import UsageError
from spsr_cli.files import write_json_atomic
from spsr_cli.model.nse import NSENet
from spsr_cli.train.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from spsr_cli.train.nse_config import NSE_CHECKPOINT_KIND, NSETrainConfig
from spsr_cli.train.nse_tasks import build_head, task_loss
from spsr_cli.train.run_folder import check_finite, open_run_folder, resume_state, torch_threads

log = logging.getLogger(__name__)

#: The file names of the training and held-out images: {"train": [...], "held_out": [...]}.
SPLIT_FILE = "split.json"


class NSECrops:
    """Random augmented HR crops of the training share; fixed crops of the held-out share.

    The batch of a step comes from the generator it is given (the loop seeds it with the step).
    """

    def __init__(self, cfg: NSETrainConfig) -> None:
        from spsr_cli.train.data import ImagePool, TrainBatches, is_held_out

        d = cfg.data
        pool = ImagePool(
            hr_dirs=d.hr_dirs,
            crop_size=d.crop_size,
            scale=4,
            cache_mb=d.cache_mb,
            synthetic=d.synthetic,
            seed=cfg.train.seed,
        )
        held = [r for r in pool.records if is_held_out(r.hr_path, d.holdout_percent)]
        train_pool, self.held_pool = copy.copy(pool), copy.copy(pool)
        train_pool.records = [r for r in pool.records if not is_held_out(r.hr_path, d.holdout_percent)]
        self.held_pool.records = held
        if not train_pool.records:
            raise UsageError("every training image is held out; lower data.holdout_percent or add images")
        self.names = {"train": [str(r.hr_path) for r in train_pool.records], "held_out": [str(r.hr_path) for r in held]}
        self.train = TrainBatches(
            train_pool,
            batch_size=d.batch_size,
            crop_size=d.crop_size,
            scale=4,
            seed=cfg.train.seed,
            flip=d.flip,
            rotate=d.rotate,
        )
        self.cfg = cfg

    @staticmethod
    def _stack(crops: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()

    def batch(self, rng: np.random.Generator) -> torch.Tensor:
        """B x 3 x c x c float32 in [0, 1]."""
        return self._stack([self.train.sample(rng)[1] for _ in range(self.cfg.data.batch_size)])

    def evaluation_batches(self) -> list[torch.Tensor]:
        """Fixed crops of the held-out images (``eval_crops`` each), in batches of B x 3 x c x c float32 in [0, 1]."""
        rng = np.random.default_rng([self.cfg.train.seed, 2])
        crops = []
        for index in range(len(self.held_pool)):
            img, _ = self.held_pool.get(index)
            h, w = img.shape[:2]
            c = self.cfg.data.crop_size
            for _ in range(self.cfg.data.eval_crops):
                y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
                crops.append(img[y : y + c, x : x + c])
        size = max(self.cfg.data.batch_size, 1)
        return [self._stack(crops[i : i + size]) for i in range(0, len(crops), size)]


@torch.no_grad()
def evaluate_held_out(
    cfg: NSETrainConfig, model: NSENet, head: torch.nn.Module, batches: list[torch.Tensor], device: torch.device
) -> dict[str, float]:
    """Mean task loss and accuracy over fixed held-out crops with fixed task samples (plus ``crops``, their number)."""
    was = model.training, head.training
    model.eval(), head.eval()
    rng = np.random.default_rng([cfg.train.seed, 3])
    rows = []
    try:
        for crops in batches:
            _, logs = task_loss(cfg, model, head, crops.to(device), rng)
            rows.append((len(crops), logs))
    finally:
        model.train(was[0]), head.train(was[1])
    total = sum(n for n, _ in rows)
    keys = rows[0][1].keys() if rows else ()
    out = {key: float(sum(n * logs[key] for n, logs in rows) / total) for key in keys}
    out["crops"] = float(total)
    return out


@dataclass
class NSETrainResult:
    """What a finished (or stopped) NSE run left behind."""

    run_dir: Path
    step: int
    checkpoint: Union[Path, None]
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)


def train_nse(
    cfg: NSETrainConfig, run_dir: Union[str, Path], *, resume: bool = False, stop_after: Union[int, None] = None
) -> NSETrainResult:
    """Train an NSE as ``cfg`` says under ``run_dir`` (checkpoints, ``log.jsonl``, ``config.yaml``, ``split.json``).

    ``resume=True`` continues from the newest checkpoint (exactly: batches and task samples
    depend only on the seed and the step). ``stop_after`` stops early, as if killed (tests).
    """
    with torch_threads(cfg.train.threads):
        return _train_nse(cfg, Path(run_dir), resume=resume, stop_after=stop_after)


def _check_resumable(cfg: NSETrainConfig, state: dict[str, Any], path: Path) -> None:
    """Refuse to resume from anything but an NSE run of the same method and model."""
    model = cfg.to_dict()["model"]
    if (
        state.get("kind") != NSE_CHECKPOINT_KIND
        or state["config"]["task"]["method"] != cfg.task.method
        or state["config"]["model"] != model
    ):
        raise UsageError(
            f"cannot resume from {path}: it is not an NSE run of method {cfg.task.method} with model "
            f"{model}; resume without --config or start a new run"
        )


def _train_nse(cfg: NSETrainConfig, run_dir: Path, *, resume: bool, stop_after: Union[int, None]) -> NSETrainResult:
    from spsr_cli.engine.device import resolve_device

    t = cfg.train
    state = resume_state(run_dir, resume=resume, check=lambda found, path: _check_resumable(cfg, found, path))
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    model = NSENet(cfg.model).to(device)
    head = build_head(cfg).to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=t.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_step, gamma=t.gamma)
    start, seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        restore_rng_state(state["rng"])
        start, seconds = int(state["step"]), float(state.get("train_seconds", 0.0))
    data = NSECrops(cfg)
    eval_batches = data.evaluation_batches()
    if not eval_batches:
        log.warning("no held-out images (data.holdout_percent=%d): accuracy is not evaluated", cfg.data.holdout_percent)
    result = NSETrainResult(run_dir=run_dir, step=start, checkpoint=None, train_seconds=seconds)
    last = min(t.steps, stop_after) if stop_after is not None else t.steps
    latest_eval = state.get("evaluation") if state is not None else None
    with open_run_folder(run_dir, cfg, resumed_step=start if state is not None else None) as run_log:
        write_json_atomic(run_dir / SPLIT_FILE, data.names)
        run_log.write(
            {
                "event": "start",
                "step": start,
                "method": cfg.task.method,
                "device": str(device),
                "train_images": len(data.names["train"]),
                "held_out_images": len(data.names["held_out"]),
            }
        )
        sums: dict[str, float] = {}
        window = 0
        tick = time.perf_counter()
        for step in range(start, last):
            began = time.perf_counter()
            rng = np.random.default_rng([t.seed, 1, step])
            crops = data.batch(rng).to(device)
            loss, logs = task_loss(cfg, model, head, crops, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_used = sched.get_last_lr()[0]
            sched.step()
            seconds += time.perf_counter() - began  # training time: evaluation and checkpoints excluded
            done = step + 1
            check_finite(logs, done, "lower train.lr, or resume from an earlier checkpoint")
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value
            window += 1
            if done % t.log_every == 0 or done == last:
                now = time.perf_counter()
                row = {
                    "step": done,
                    "lr": lr_used,
                    "it_s": window / max(now - tick, 1e-9),
                    **{k: v / window for k, v in sums.items()},
                }
                tick, sums, window = now, {}, 0
                result.history.append(row)
                run_log.write(row)
                log.info("step %d: loss %.4f, accuracy %.3f", done, row["loss"], row["accuracy"])
            if eval_batches and (done % t.eval_every == 0 or done == t.steps):
                latest_eval = {"step": done, **evaluate_held_out(cfg, model, head, eval_batches, device)}
                result.evaluation.append(latest_eval)
                run_log.write({"event": "evaluation", **latest_eval})
                log.info("step %d: held-out accuracy %.4f", done, latest_eval["accuracy"])
            if done % t.checkpoint_every == 0 or done == last:
                result.checkpoint = save_checkpoint(
                    run_dir,
                    done,
                    {
                        "kind": NSE_CHECKPOINT_KIND,
                        "config": cfg.to_dict(),
                        "model": model.state_dict(),
                        "head": head.state_dict(),
                        "opt": opt.state_dict(),
                        "sched": sched.state_dict(),
                        "rng": capture_rng_state(),
                        "train_seconds": seconds,
                        "evaluation": latest_eval,
                        "split": {k: len(v) for k, v in data.names.items()},
                    },
                    keep=t.keep_checkpoints,
                )
            result.step = done
        result.train_seconds = seconds
        run_log.write({"event": "stop", "step": result.step, "train_seconds": seconds})
    return result


__all__ = ["NSECrops", "NSETrainResult", "SPLIT_FILE", "evaluate_held_out", "train_nse"]
