"""Validation during training, scored exactly as ``spsr eval`` scores a folder.

Pairs are :class:`~spsr_cli.eval.datasets.ImagePair` s made by the eval package's reader
and bicubic (so a folder of the same crops given to ``spsr eval --hr-dir`` gives the same
numbers), upscaled through the eval package's tiled, quantised path and scored by its
:func:`~spsr_cli.eval.runner.score_pair` (PSNR/SSIM under the spsr-paper protocol, LPIPS).

Two sources: a folder (``validation.hr_dir``), or the held-out share of the training
folders (``data.holdout_percent``, split by file-name hash, never trained on), fixed
crops along each image's diagonal. The gradient branch is scored too: L1 and PSNR (peak 1) of its
predicted HR gradient map against the HR image's, beside the same numbers for the gradient
map of the bicubic-upscaled LR, so a branch that only interpolates shows as no better.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from spsr_cli.errors import SPSRError
from spsr_cli.eval.datasets import ImagePair, load_pair, pair_files, read_rgb
from spsr_cli.io.imresize import bicubic_downscale, bicubic_upscale
from spsr_cli.model.gradient import gradient_map
from spsr_cli.train.data import held_out_files

log = logging.getLogger(__name__)


def holdout_pairs(
    hr_dirs: Sequence[Union[str, Path]],
    *,
    percent: int,
    crop_size: int,
    scale: int,
    max_images: int,
    crops_per_image: int = 1,
) -> list[ImagePair]:
    """Fixed crops (``crop_size`` HR px, LR by the eval bicubic) of each held-out training image.

    ``crops_per_image`` crops lie evenly along the image's diagonal (one: the centre crop; two:
    a third and two thirds of the free range), named ``STEM`` or ``STEM-K``. An image smaller
    than the crop gives its largest square crop (a multiple of ``scale``) instead; at most
    ``max_images`` images are used.
    """
    pairs: list[ImagePair] = []
    used = 0
    for path in held_out_files(hr_dirs, percent):
        if used >= max_images:
            break
        try:
            hr = read_rgb(path)
        except SPSRError as err:
            log.warning("skipping validation image %s: %s", path, err)
            continue
        h, w = hr.shape[:2]
        size = min(crop_size, min(h, w) // scale * scale)  # a small image gives its largest square crop
        if size < 8 * scale:
            log.warning("skipping validation image %s: %dx%d is too small to crop", path, w, h)
            continue
        used += 1
        for k in range(crops_per_image):
            at = (k + 1) / (crops_per_image + 1)
            y, x = round((h - size) * at), round((w - size) * at)
            crop = np.ascontiguousarray(hr[y : y + size, x : x + size])
            name = path.stem if crops_per_image == 1 else f"{path.stem}-{k + 1}"
            pairs.append(ImagePair(name=name, hr=crop, lr=bicubic_downscale(crop, scale)))
    return pairs


def folder_pairs(
    hr_dir: Union[str, Path], lr_dir: Union[str, Path, None], *, scale: int, max_images: int
) -> list[ImagePair]:
    """The first ``max_images`` pairs of a folder, paired and read as ``spsr eval --hr-dir/--lr-dir`` does."""
    pairs = []
    for name, hr_path, lr_path in pair_files(Path(hr_dir), Path(lr_dir) if lr_dir else None)[:max_images]:
        try:
            pairs.append(load_pair(name, hr_path, lr_path, scale))
        except SPSRError as err:
            log.warning("skipping validation image %s: %s", hr_path, err)
    return pairs


def validate(
    model: nn.Module,
    pairs: Sequence[ImagePair],
    *,
    device: torch.device,
    scale: int,
    lpips_net: nn.Module | None,
    protocol: str = "spsr-paper",
) -> dict[str, float]:
    """Mean scores of ``model`` (an :class:`~spsr_cli.model.spsr.SPSRNet`) over ``pairs``.

    Returns ``psnr``, ``ssim`` (and ``lpips`` when ``lpips_net`` is given) of the SR images,
    plus ``branch_l1`` / ``branch_psnr`` (the gradient branch's map against the HR gradient
    map) and ``bicubic_branch_l1`` / ``bicubic_branch_psnr`` (the bicubic-upscaled LR's).
    Inference is float32 on ``device``; ``model`` is left in the mode it was in.
    """
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.eval.metrics import get_protocol
    from spsr_cli.eval.runner import module_upscaler, score_pair

    proto = get_protocol(protocol)
    was_training = model.training
    model.eval()
    rows, branch_rows = [], []
    try:
        upscale, _ = module_upscaler(model, InferenceOptions(device=str(device), precision="fp32", tile="auto"))
        for pair in pairs:
            row, _ = score_pair(pair, upscale, proto, scale, lpips_net, None)
            rows.append(row)
            branch_rows.append(_branch_scores(model, pair, device=device, scale=scale))
    finally:
        model.train(was_training)
    out = {"psnr": float(np.mean([r.psnr for r in rows])), "ssim": float(np.mean([r.ssim for r in rows]))}
    lpips_values = [r.lpips for r in rows if r.lpips is not None]
    if lpips_values:
        out["lpips"] = float(np.mean(lpips_values))
    for key in ("branch_l1", "branch_psnr", "bicubic_branch_l1", "bicubic_branch_psnr"):
        out[key] = float(np.mean([r[key] for r in branch_rows]))
    return out


@torch.no_grad()
def _branch_scores(model: nn.Module, pair: ImagePair, *, device: torch.device, scale: int) -> dict[str, float]:
    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)

    param = next(model.parameters())
    lr = tensor(pair.lr).to(device=device, dtype=param.dtype)
    predicted = model(lr, fuse=False).branch.float().cpu()
    target = gradient_map(tensor(pair.hr), 1)
    bicubic = gradient_map(tensor(bicubic_upscale(pair.lr, scale)), 1)
    out = {}
    for prefix, estimate in (("branch", predicted), ("bicubic_branch", bicubic)):
        l1 = float((estimate - target).abs().mean())
        mse = float(((estimate - target) ** 2).mean())
        out[f"{prefix}_l1"] = l1
        out[f"{prefix}_psnr"] = 10 * math.log10(1.0 / mse) if mse > 0 else math.inf
    return out


__all__ = ["folder_pairs", "holdout_pairs", "validate"]
