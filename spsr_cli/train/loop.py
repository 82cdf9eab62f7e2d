"""The generator's training loop: :func:`train`, read top to bottom.

Per step: the generator step (SPSR-G, or pixel + branch L1 in ``--stage psnr``),
the EMA update, then the discriminator step (``--stage gan``). ``train.trainable``
names the generator parts that learn (the others are frozen: no gradient, no autograd
graph); during the first ``train.fusion_only_steps`` steps only the fusion (``f_``)
layers train. When no loss term needs the SR image (a branch-only stage), the forward
skips the fusion block. Every
``train.checkpoint_every`` steps an atomic checkpoint is written; ``resume=True``
continues from the newest one and reproduces the uninterrupted run exactly (the
batch of each step depends only on the seed, rank and step; every state, RNGs
included, is restored). Under ``torchrun`` the generator and both discriminators
run in DistributedDataParallel; logs, checkpoints and validation are rank 0's job.
The run folder (``config.yaml``, ``log.jsonl``, checkpoints), the resume and thread rules
and the divergence check are :mod:`spsr_cli.train.run_folder`'s, shared with NSE training.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from spsr_cli.errors import SPSRError, UsageError
from spsr_cli.files import write_json_atomic
from spsr_cli.model.spsr import PARTS, SPSRNet, part_of
from spsr_cli.train import distributed, validation
from spsr_cli.train.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    initialise_generator,
    restore_rng_state,
    save_checkpoint,
)
from spsr_cli.train.config import TRAINABLE, TrainConfig, TrainSection
from spsr_cli.train.data import ImagePool, TrainBatches, batch_loader
from spsr_cli.train.objective import LossWeights, SPSRObjective
from spsr_cli.train.run_folder import RunLog, check_finite, open_run_folder, resume_state, torch_threads

log = logging.getLogger(__name__)

INIT_REPORT_FILE = "init_report.json"
#: EMA generator of the best validation so far (lowest LPIPS at PSNR >= validation.psnr_floor).
BEST_FILE = "best.pt"


@dataclass
class TrainResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    step: int
    checkpoint: Union[Path, None]
    perceptual: str
    rank: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    #: Final state dicts of "model", "ema", "d_image", "d_gradient" (live tensors, not copies).
    state: dict[str, Any] = field(default_factory=dict, repr=False)


def train(
    cfg: TrainConfig,
    run_dir: Union[str, Path],
    *,
    resume: bool = False,
    perceptual_backbone: Union[tuple[nn.Module, str], None] = None,
    stop_after: Union[int, None] = None,
) -> TrainResult:
    """Train an SPSR generator as ``cfg`` says, writing everything under ``run_dir``.

    Args:
        cfg: the resolved configuration (stored with the run and every checkpoint).
        run_dir: the run folder (created). A fresh run refuses a folder that already
            holds checkpoints; ``resume=True`` continues from the newest one (or starts
            fresh when there is none).
        perceptual_backbone: ``(module, name)`` to use instead of building the one that
            ``loss.perceptual_backbone`` names (tests inject a tiny random network).
        stop_after: stop once this many steps are done (as if killed; for tests).

    Returns:
        :class:`TrainResult` with the per-log-window loss history.
    """
    with torch_threads(cfg.train.threads):
        return _train(cfg, Path(run_dir), resume=resume, perceptual_backbone=perceptual_backbone, stop_after=stop_after)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    perceptual_backbone: Union[tuple[nn.Module, str], None],
    stop_after: Union[int, None],
) -> TrainResult:
    t = cfg.train
    ctx = distributed.setup(t.device)
    device = ctx.device
    run_log, tb, progress = RunLog(None), None, None
    try:
        # ---- where to start ---------------------------------------------------------
        state = resume_state(
            run_dir, resume=resume, check=lambda found, path: _check_resumable(cfg, found, path), announce=ctx.is_main
        )
        start = state["step"] if state else 0
        end = t.steps

        # ---- models (identical initialisation on every rank) ------------------------
        torch.manual_seed(t.seed)
        np.random.seed(t.seed)
        random.seed(t.seed)
        weights = LossWeights.for_stage(cfg, t.stage)
        model = SPSRNet(config=cfg.spsr_config())
        init_report = None
        if state is None and t.init:
            init_report = initialise_generator(model, t.init)
            if ctx.is_main:
                log.info(
                    "initialised the generator from %s (%d tensors loaded, %d random)",
                    t.init,
                    len(init_report["loaded"]),
                    len(init_report["random"]),
                )
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        crop, out_ch = cfg.data.crop_size, cfg.model.out_channels
        d_image = d_gradient = None
        if weights.gan > 0 or weights.gradient_gan > 0:
            from spsr_cli.train.discriminator import VGGDiscriminator

            if weights.gan > 0:
                d_image = VGGDiscriminator(in_channels=out_ch, base_channels=cfg.loss.d_channels, input_size=crop)
            if weights.gradient_gan > 0:  # padding-2 gradient maps are 2 px larger per side
                d_gradient = VGGDiscriminator(
                    in_channels=out_ch, base_channels=cfg.loss.d_channels, input_size=crop + 2
                )
        structure = d_structure = None
        if weights.structure:  # SPSR-P / SPSR-J: a frozen NSE and a discriminator on its feature maps
            from spsr_cli.train.structure import FeatureDiscriminator, build_structure_features

            structure = build_structure_features(cfg.loss.nse_spec())
            if weights.structure_gan > 0:
                d_structure = FeatureDiscriminator(
                    in_channels=structure.channels, base_channels=cfg.loss.d_channels, input_size=crop // 4
                )
        backbone, perceptual_name = None, "none"
        if weights.perceptual > 0:
            if perceptual_backbone is not None:
                backbone, perceptual_name = perceptual_backbone
            elif cfg.loss.perceptual_backbone == "none":
                if ctx.is_main:
                    log.warning("loss.perceptual_backbone is 'none': the perceptual term is switched off")
                weights = dataclasses.replace(weights, perceptual=0.0)
            else:
                from spsr_cli.weights.hub import hub_offline
                from spsr_cli.weights.vgg import build_feature_extractor

                for turn in (True, False):  # rank 0 downloads/converts first, the others read its cache
                    if ctx.is_main == turn:
                        backbone, perceptual_name = build_feature_extractor(
                            prefer=cfg.loss.perceptual_backbone, offline=hub_offline()
                        )
                    distributed.barrier(ctx)
            if ctx.is_main and backbone is not None:
                log.info("perceptual loss on %s features", perceptual_name)
        objective = SPSRObjective(
            weights=weights,
            perceptual_backbone=backbone,
            d_image=d_image,
            d_gradient=d_gradient,
            structure=structure,
            d_structure=d_structure,
            gv_patch_size=cfg.loss.gv_patch_size,
        )
        use_amp = use_bf16_autocast(device, t.amp)
        # channels_last pays on CUDA and, with bf16, on CPUs with bf16 matrix units
        channels_last = t.channels_last and (device.type == "cuda" or use_amp)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for module in (model, ema, d_image, d_gradient, d_structure, objective):
            if module is not None:
                module.to(device=device, memory_format=memory_format)
        if ctx.is_main:
            log.info(
                "training on %s in %s%s",
                device,
                "bfloat16 autocast" if use_amp else "float32",
                " + channels_last" if channels_last else "",
            )

        # ---- optimisers and schedules (Adam + MultiStep, as in the paper) -------------
        adam = dict(betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
        opt_g = torch.optim.Adam(part_groups(model, t), **adam)
        sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=t.milestones, gamma=t.gamma)
        d_params = [p for d in (d_image, d_gradient, d_structure) if d is not None for p in d.parameters()]
        opt_d = torch.optim.Adam(d_params, lr=t.lr_d, **adam) if d_params else None
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones=t.milestones, gamma=t.gamma) if opt_d else None

        # ---- resume: every state, RNGs included ------------------------------------
        if state is not None:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt_g.load_state_dict(state["opt_g"])
            sched_g.load_state_dict(state["sched_g"])
            rescale_part_groups(opt_g, sched_g, t)
            for name, module in (("d_image", d_image), ("d_gradient", d_gradient), ("d_structure", d_structure)):
                if module is not None:
                    module.load_state_dict(state[name])
            if opt_d is not None:
                opt_d.load_state_dict(state["opt_d"])
                sched_d.load_state_dict(state["sched_d"])
            rng = state["rng"]
            restore_rng_state(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])
            init_report = state.get("init_report")
            if state.get("perceptual", "none") != perceptual_name and ctx.is_main:
                log.warning(
                    "the checkpoint used perceptual features %s, this run uses %s",
                    state.get("perceptual"),
                    perceptual_name,
                )
        d_image_ddp = distributed.wrap_ddp(d_image, ctx) if d_image is not None else None
        d_gradient_ddp = distributed.wrap_ddp(d_gradient, ctx) if d_gradient is not None else None
        d_structure_ddp = distributed.wrap_ddp(d_structure, ctx) if d_structure is not None else None

        # ---- data ------------------------------------------------------------------
        pool = ImagePool(
            hr_dirs=cfg.data.hr_dirs,
            lr_dirs=cfg.data.lr_dirs,
            crop_size=crop,
            scale=cfg.model.scale,
            cache_mb=cfg.data.cache_mb,
            synthetic=cfg.data.synthetic,
            seed=t.seed,
            holdout_percent=cfg.data.holdout_percent,
        )
        batches = TrainBatches(
            pool,
            batch_size=cfg.data.batch_size,
            crop_size=crop,
            scale=cfg.model.scale,
            seed=t.seed,
            rank=ctx.rank,
            flip=cfg.data.flip,
            rotate=cfg.data.rotate,
            quantize_lr=cfg.data.quantize_lr,
        )
        last = min(end, stop_after) if stop_after is not None else end
        loader = batch_loader(
            batches, start_step=start, end_step=last, num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda"
        )
        val_pairs, lpips_net = [], None
        if ctx.is_main:
            val_pairs = validation_pairs(cfg)
            if val_pairs and cfg.validation.lpips:
                lpips_net = lpips_or_none()
        best = _read_best(run_dir) if state is not None else None

        # ---- run folder, logs, progress ---------------------------------------------
        if ctx.is_main:
            run_log = open_run_folder(run_dir, cfg)
            if init_report is not None:
                write_json_atomic(run_dir / INIT_REPORT_FILE, init_report)
            tb = _tensorboard(run_dir) if cfg.logging.tensorboard else None
        progress = _TrainProgressBar(enabled=ctx.is_main and cfg.logging.progress, start=start, total=end)
        result = TrainResult(run_dir=run_dir, step=start, checkpoint=None, perceptual=perceptual_name, rank=ctx.rank)
        if ctx.is_main:
            run_log.write(
                {
                    "event": "start",
                    "step": start,
                    "stage": t.stage,
                    "world_size": ctx.world_size,
                    "device": str(device),
                    "perceptual": perceptual_name,
                    "amp": use_amp,
                    "channels_last": channels_last,
                    "d_warmup_steps": t.d_warmup_steps,
                    "preset": cfg.loss.preset,
                    "nse": cfg.loss.nse_spec(),
                    "trainable": t.trainable,
                    "train_images": len(pool),
                    "held_out_images": len(pool.held_out),
                    "validation_pairs": len(val_pairs),
                }
            )

        # ---- the loop -------------------------------------------------------------
        g_ddp, fusion_phase = None, None
        needs_sr = any(getattr(weights, name) > 0 for name in dataclasses.asdict(weights) if name != "branch")
        sums: dict[str, torch.Tensor] = {}
        window, window_start = 0, time.perf_counter()
        loop_start = window_start
        step = start
        for step in range(start, last):
            fusion_only = step < t.fusion_only_steps
            if fusion_only != fusion_phase:  # (re)wrap: DDP only syncs parameters that train
                parts = TRAINABLE["fusion" if fusion_only else t.trainable]
                for name, p in model.named_parameters():
                    p.requires_grad_(part_of(name) in parts)
                g_ddp = None  # drop the old wrapper (and its gradient hooks) first
                g_ddp, fusion_phase = distributed.wrap_ddp(model, ctx), fusion_only
            batch = next(loader)
            lr_img = batch["lr"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            hr_img = batch["hr"].to(device, non_blocking=True).contiguous(memory_format=memory_format)

            # generator step (frozen while the discriminators warm up)
            lr_used = opt_g.param_groups[0]["lr"] / opt_g.param_groups[0]["factor"]
            if opt_d is not None and step < t.d_warmup_steps:
                with torch.no_grad(), autocast_context(device, use_amp):
                    out = model(lr_img)
                terms: dict[str, torch.Tensor] = {}
            else:
                with autocast_context(device, use_amp):
                    out = g_ddp(lr_img, fuse=needs_sr)
                    loss_g, terms = objective.generator_loss(out.sr, out.branch, hr_img)
                opt_g.zero_grad(set_to_none=True)
                if loss_g.requires_grad:
                    loss_g.backward()
                    terms["grad_norm_g"] = torch.nn.utils.clip_grad_norm_(  # inf: measure only
                        [p for p in model.parameters() if p.grad is not None],
                        t.grad_clip if t.grad_clip > 0 else math.inf,
                    ).detach()
                    opt_g.step()
                sched_g.step()
                decay = min(t.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), model.parameters()):
                        p_ema.lerp_(p.detach(), 1.0 - decay)
                terms["loss_g"] = loss_g.detach()

            # discriminator step
            if opt_d is not None:
                with autocast_context(device, use_amp):
                    loss_d, d_logs = objective.discriminator_losses(
                        out.sr, hr_img, d_image=d_image_ddp, d_gradient=d_gradient_ddp, d_structure=d_structure_ddp
                    )
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(d_params, t.grad_clip)
                opt_d.step()
                sched_d.step()
                terms.update(d_logs, loss_d=loss_d.detach())

            done = step + 1
            out_of_time = False
            if t.time_limit_min > 0 and done < last:  # all ranks stop together
                over = float(time.perf_counter() - loop_start > 60.0 * t.time_limit_min)
                out_of_time = distributed.mean_across_ranks(ctx, {"over": over})["over"] > 0
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.float()
            window += 1

            # logs
            if done % t.log_every == 0 or done == last or out_of_time:
                values = {k: float(v) / window for k, v in sums.items()}
                values = distributed.mean_across_ranks(ctx, values)
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": done,
                    "lr": lr_used,
                    "it_s": window / max(elapsed, 1e-9),
                    "fusion_only": fusion_only,
                    **values,
                }
                check_finite(
                    values,
                    done,
                    "lower train.lr, set train.grad_clip, check the data or --init weights, "
                    "or resume from an earlier checkpoint",
                )
                result.history.append(row)
                if ctx.is_main:
                    run_log.write(row)
                    if tb is not None:
                        for key, value in values.items():
                            tb.add_scalar(f"train/{key}", value, done)
                progress.update(done, row)
                sums, window, window_start = {}, 0, time.perf_counter()

            # checkpoint
            if done % t.checkpoint_every == 0 or done == end or out_of_time:
                rng_states = distributed.all_gather_objects(ctx, capture_rng_state())
                if ctx.is_main:
                    result.checkpoint = save_checkpoint(
                        run_dir,
                        done,
                        {
                            "config": cfg.to_dict(),
                            "stage": t.stage,
                            "perceptual": perceptual_name,
                            "model": model.state_dict(),
                            "ema": ema.state_dict(),
                            "d_image": d_image.state_dict() if d_image is not None else None,
                            "d_gradient": d_gradient.state_dict() if d_gradient is not None else None,
                            "d_structure": d_structure.state_dict() if d_structure is not None else None,
                            "opt_g": opt_g.state_dict(),
                            "sched_g": sched_g.state_dict(),
                            "opt_d": opt_d.state_dict() if opt_d is not None else None,
                            "sched_d": sched_d.state_dict() if sched_d is not None else None,
                            "rng": rng_states,
                            "world_size": ctx.world_size,
                            "init_report": init_report,
                        },
                        keep=t.keep_checkpoints,
                    )
                distributed.barrier(ctx)

            # validation (EMA generator, the eval issue's metrics)
            if val_pairs and (done % cfg.validation.every == 0 or done == end or out_of_time):
                metrics = validation.validate(ema, val_pairs, device=device, scale=cfg.model.scale, lpips_net=lpips_net)
                row = {"event": "validation", "step": done, **metrics}
                if _is_better(metrics, best, cfg.validation.psnr_floor):
                    best = {"step": done, **metrics}
                    _save_best(run_dir, best, ema, cfg)
                    row["best"] = True
                result.validation.append(row)
                run_log.write(row)
                if tb is not None:
                    for key, value in metrics.items():
                        tb.add_scalar(f"val/{key}", value, done)
                progress.note(
                    f"step {done}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}"
                    + (f", LPIPS {metrics['lpips']:.4f}" if "lpips" in metrics else "")
                )
            if out_of_time:
                if ctx.is_main:
                    run_log.write({"event": "time_limit", "step": done, "minutes": t.time_limit_min})
                progress.note(f"time limit of {t.time_limit_min} min reached at step {done}; checkpoint saved")
                break
        result.step = step + 1 if last > start else start
        result.state = {
            name: module.state_dict()
            for name, module in (
                ("model", model),
                ("ema", ema),
                ("d_image", d_image),
                ("d_gradient", d_gradient),
                ("d_structure", d_structure),
            )
            if module is not None
        }
        run_log.write({"event": "stop", "step": result.step})
        return result
    finally:
        if progress is not None:
            progress.close()
        run_log.close()
        if tb is not None:
            tb.close()
        distributed.cleanup(ctx)


def part_groups(model: nn.Module, t: TrainSection) -> list[dict[str, Any]]:
    """Adam parameter groups of an SPSR generator, one per part (``PARTS`` order), each at
    ``t.lr`` times its ``t.lr_parts`` factor; a group records its ``part`` and ``factor``."""
    groups = {part: [] for part in PARTS}
    for name, p in model.named_parameters():
        groups[part_of(name)].append(p)
    return [
        {"params": params, "lr": t.lr * getattr(t.lr_parts, part), "part": part, "factor": getattr(t.lr_parts, part)}
        for part, params in groups.items()
        if params
    ]


def rescale_part_groups(opt: torch.optim.Optimizer, sched: Any, t: TrainSection) -> None:
    """After resuming, give each part's group the rate the config now names (``--set train.lr=...`` or
    ``--set train.lr_parts.trunk=...`` on ``--resume``), keeping the schedule's decay so far."""
    for group in opt.param_groups:
        factor = getattr(t.lr_parts, group["part"])
        decay = group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0
        group["initial_lr"] = t.lr * factor
        group["lr"] = group["initial_lr"] * decay
        group["factor"] = factor
    sched.base_lrs = [group["initial_lr"] for group in opt.param_groups]


def _check_resumable(cfg: TrainConfig, state: dict[str, Any], path: Path) -> None:
    """Refuse to resume with a different generator size or stage."""
    stored = state.get("config", {})
    if stored.get("model") != cfg.to_dict()["model"]:
        raise UsageError(
            f"cannot resume from {path}: it trains model {stored.get('model')}, the config says "
            f"{cfg.to_dict()['model']}; resume without --config or start a new run"
        )
    groups = state.get("opt_g", {}).get("param_groups", [])
    if any("part" not in g for g in groups):
        raise UsageError(
            f"cannot resume from {path}: it was written before per-part learning rates (train.lr_parts); "
            f"start a new run with --init {path.parent.parent} instead"
        )
    stored_preset = stored.get("loss", {}).get("preset", "spsr-g")
    if stored_preset != cfg.loss.preset:
        raise UsageError(
            f"cannot resume from {path}: it trains loss.preset {stored_preset}, the config says "
            f"{cfg.loss.preset}; resume with the same preset or start a new run with --init {path}"
        )
    if state.get("stage") != cfg.train.stage:
        raise UsageError(
            f"cannot resume from {path}: it is a --stage {state.get('stage')} run; start a new run "
            f"with --stage {cfg.train.stage} --init {path.parent.parent} instead"
        )


def validation_pairs(cfg: TrainConfig) -> list:
    """The validation pairs the config names: a folder, the held-out training images, or none."""
    v = cfg.validation
    if v.hr_dir:
        return validation.folder_pairs(v.hr_dir, v.lr_dir, scale=cfg.model.scale, max_images=v.max_images)
    if cfg.data.holdout_percent > 0 and cfg.data.hr_dirs:
        return validation.holdout_pairs(
            cfg.data.hr_dirs,
            percent=cfg.data.holdout_percent,
            crop_size=v.crop_size,
            scale=cfg.model.scale,
            max_images=v.max_images,
            crops_per_image=v.crops_per_image,
        )
    return []


def lpips_or_none() -> Union[nn.Module, None]:
    from spsr_cli.eval.lpips import load_lpips
    from spsr_cli.weights.hub import hub_offline

    try:
        return load_lpips(offline=hub_offline())
    except SPSRError as err:
        log.warning("validation without LPIPS: %s (spsr weights download lpips fetches it)", err)
        return None


def _is_better(metrics: dict[str, float], best: Union[dict[str, Any], None], psnr_floor: float) -> bool:
    """Lower LPIPS (PSNR when LPIPS is missing) than ``best``, with PSNR at or above the floor."""
    if metrics["psnr"] < psnr_floor:
        return False
    if best is None:
        return True
    if "lpips" in metrics and "lpips" in best:
        return metrics["lpips"] < best["lpips"]
    return metrics["psnr"] > best["psnr"]


def _read_best(run_dir: Path) -> Union[dict[str, Any], None]:
    path = run_dir / BEST_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["validation"]


def _save_best(run_dir: Path, best: dict[str, Any], ema: nn.Module, cfg: TrainConfig) -> None:
    """Atomically write the best EMA generator so far (``best.pt``: config, validation row, ema)."""
    atomic_torch_save(
        {
            "config": cfg.to_dict(),
            "validation": best,
            "step": best["step"],
            "ema": {k: v.detach().clone() for k, v in ema.state_dict().items()},
        },
        run_dir / BEST_FILE,
    )


def use_bf16_autocast(device: torch.device, amp: str) -> bool:
    """``train.amp``: ``auto`` = bfloat16 autocast on CUDA and on CPUs with bf16 matrix
    units (AMX / AVX512-BF16), float32 elsewhere; ``bf16`` forces it; ``off`` = float32."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    if device.type == "cuda":
        return True
    from spsr_cli.engine.device import cpu_has_bf16_units

    return device.type == "cpu" and cpu_has_bf16_units()


def autocast_context(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "logging.tensorboard=true needs the tensorboard package: pip install 'spsr-cli[tensorboard]'"
        ) from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class _TrainProgressBar:
    """Rich progress bar with the latest losses, it/s and ETA (rank 0 only)."""

    SHOWN = (
        "loss_g",
        "pixel",
        "perceptual",
        "gan",
        "gradient_pixel",
        "gradient_gan",
        "structure_pixel",
        "structure_gan",
        "branch",
        "loss_d",
    )

    def __init__(self, *, enabled: bool, start: int, total: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        err = Console(stderr=True, highlight=False)  # progress goes to stderr, like every message
        err.soft_wrap = not err.is_terminal  # in a log file: whole lines, not cut at 80 columns
        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            transient=False,
            console=err,
        )
        self.task = self.bar.add_task("train", total=total, completed=start, rate="", losses="")
        self.bar.start()

    def update(self, step: int, row: dict[str, Any]) -> None:
        if self.bar is None:
            return
        losses = " ".join(f"{k}={row[k]:.4g}" for k in self.SHOWN if k in row)
        self.bar.update(self.task, completed=step, rate=f"{row['it_s']:.2f} it/s", losses=losses)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.log(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
