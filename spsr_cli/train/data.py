"""Training data: random HR crops, flips and 90-degree rotations, LR by MATLAB bicubic.

The batch of step ``s`` is a pure function of ``(seed, rank, s)``: every step draws
from its own ``numpy`` generator seeded with those three numbers. A resumed run
therefore sees exactly the batches the uninterrupted run would have seen, no
sampler state has to be checkpointed, and loader workers can build any step.

Images are listed and read by the eval package (:func:`~spsr_cli.eval.datasets.image_files`,
:func:`~spsr_cli.eval.datasets.read_rgb`: EXIF orientation applied, 16-bit rounded to 8 bits),
so training sees the pixels ``spsr eval`` scores. LR images are made from each (augmented) HR
crop with the same MATLAB-compatible bicubic that ``spsr eval`` uses
(:func:`spsr_cli.io.imresize.imresize`), so training and evaluation see the same degradation.
Paired mode (``data.lr_dirs``) crops matching LR/HR windows from files with the same stem
instead (an HR image may have up to ``scale - 1`` more pixels per side, as in ``spsr eval``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch

from spsr_cli.errors import ImageError, UsageError
from spsr_cli.eval.datasets import image_files, image_size, is_scale_pair, read_rgb, to_uint8
from spsr_cli.files import sha256_bytes

log = logging.getLogger(__name__)


class NoTrainingImagesError(UsageError):
    """No usable image was found in the configured folders."""


@dataclass
class ImageRecord:
    """One usable training image (HR, and LR in paired mode)."""

    hr_path: Path
    lr_path: Union[Path, None]
    hr_size: tuple[int, int]  # (width, height)
    hr: Union[np.ndarray, None] = None  # cached H x W x 3 uint8
    lr: Union[np.ndarray, None] = None


def is_held_out(path: Union[str, Path], percent: int) -> bool:
    """The fixed validation split: a file is held out of training when ``sha256(file name) mod 100 < percent``.

    Depends on the file name only (not the folder), so the split is the same on every machine.
    """
    return int(sha256_bytes(Path(path).name.encode()), 16) % 100 < percent


def held_out_files(folders: Sequence[Union[str, Path]], percent: int) -> list[Path]:
    """The image files of ``folders`` that :func:`is_held_out` keeps out of training (sorted by folder, name)."""
    return [p for folder in folders for p in list_images(Path(folder)) if is_held_out(p, percent)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside a configured training folder (:func:`~spsr_cli.eval.datasets.image_files`)."""
    if not folder.is_dir():
        raise NoTrainingImagesError(f"image folder {folder} does not exist; check data.hr_dirs / data.lr_dirs")
    return image_files(folder)


class ImagePool:
    """The usable images of one or more folders, decoded once and cached when they fit.

    Unreadable files and images smaller than the crop are skipped with a warning.
    ``cache_mb`` bounds the decoded cache; beyond it images are decoded on access.
    ``holdout_percent``: files that :func:`is_held_out` names are left out (validation's share).
    """

    def __init__(
        self,
        *,
        hr_dirs: Sequence[Union[str, Path]],
        lr_dirs: Sequence[Union[str, Path]] = (),
        crop_size: int,
        scale: int,
        cache_mb: int = 4096,
        synthetic: int = 0,
        seed: int = 0,
        holdout_percent: int = 0,
    ) -> None:
        if not hr_dirs and synthetic <= 0:
            raise NoTrainingImagesError("no training folders given; set data.hr_dirs (or data.synthetic) in the config")
        self.paired = bool(lr_dirs)
        self.crop_size = crop_size
        self.scale = scale
        self.records: list[ImageRecord] = []
        self.skipped: list[tuple[Path, str]] = []
        self.holdout_percent = holdout_percent
        self.held_out: list[Path] = []
        lr_list = list(lr_dirs) if lr_dirs else [None] * len(hr_dirs)
        for hr_dir, lr_dir in zip(hr_dirs, lr_list):
            self._scan(Path(hr_dir), Path(lr_dir) if lr_dir is not None else None)
        if not self.records and synthetic <= 0:
            raise NoTrainingImagesError(
                f"no usable training images (>= {crop_size} px) in {', '.join(map(str, hr_dirs))}"
            )
        self._fill_cache(cache_mb * 1024 * 1024)
        size = max(2 * crop_size, 96)
        for i, img in enumerate(synthetic_images(synthetic, size=size, seed=seed)):
            self.records.append(
                ImageRecord(hr_path=Path(f"<synthetic {i}>"), lr_path=None, hr_size=(size, size), hr=img)
            )
        if not self.records:
            raise NoTrainingImagesError(f"no training image in {', '.join(map(str, hr_dirs))} could be decoded")

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))
        log.warning("skipping training image %s: %s", path, reason)

    def _scan(self, hr_dir: Path, lr_dir: Union[Path, None]) -> None:
        lr_by_stem = {p.stem: p for p in list_images(lr_dir)} if lr_dir is not None else {}
        for path in list_images(hr_dir):
            if is_held_out(path, self.holdout_percent):
                self.held_out.append(path)
                continue
            try:
                w, h = image_size(path)
            except ImageError as exc:
                self._skip(path, f"cannot be decoded ({exc})")
                continue
            if min(w, h) < self.crop_size:
                self._skip(path, f"{w}x{h} is smaller than the {self.crop_size} px crop")
                continue
            lr_path = None
            if lr_dir is not None:
                lr_path = lr_by_stem.get(path.stem)
                if lr_path is None:
                    self._skip(path, f"no LR image with the same name in {lr_dir}")
                    continue
                try:
                    lw, lh = image_size(lr_path)
                except ImageError as exc:
                    self._skip(path, f"its LR image {lr_path} cannot be decoded ({exc})")
                    continue
                if not is_scale_pair((w, h), (lw, lh), self.scale):
                    self._skip(path, f"LR {lw}x{lh} is not HR {w}x{h} divided by {self.scale}")
                    continue
            self.records.append(ImageRecord(hr_path=path, lr_path=lr_path, hr_size=(w, h)))

    def _fill_cache(self, budget: int) -> None:
        """Decode images into memory until ``budget`` bytes are used; the rest decode on access."""
        used, kept, uncached = 0, [], 0
        for record in self.records:
            w, h = record.hr_size
            need = w * h * 3 * (1 + (1 / self.scale**2 if self.paired else 0))
            if used + need > budget:
                uncached += 1
                kept.append(record)
                continue
            try:
                record.hr = read_rgb(record.hr_path)
                if record.lr_path is not None:
                    record.lr = read_rgb(record.lr_path)
            except ImageError as exc:
                self._skip(record.hr_path, f"cannot be decoded ({exc})")
                continue
            used += need
            kept.append(record)
        self.records = kept
        if uncached:
            log.info("%d of %d training images exceed data.cache_mb and are decoded on access", uncached, len(kept))

    def __len__(self) -> int:
        return len(self.records)

    def get(self, index: int) -> tuple[np.ndarray, Union[np.ndarray, None]]:
        """(HR H x W x 3 uint8, LR h x w x 3 uint8 or None) of image ``index``."""
        record = self.records[index]
        hr = record.hr if record.hr is not None else read_rgb(record.hr_path)
        lr = None
        if record.lr_path is not None:
            lr = record.lr if record.lr is not None else read_rgb(record.lr_path)
        return hr, lr


def synthetic_images(count: int, *, size: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` generated size x size x 3 uint8 images: smooth colour ramps with
    random rectangles, discs and stripes (edges and textures to learn from)."""
    rng = np.random.default_rng([seed, 7919])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    images = []
    for _ in range(count):
        img = np.stack([rng.uniform(0.2, 0.8) + rng.uniform(-0.3, 0.3) * (xx if c % 2 else yy) for c in range(3)], -1)
        for _ in range(int(rng.integers(3, 7))):
            colour = rng.uniform(0, 1, 3)
            kind = int(rng.integers(3))
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
            if kind == 0:
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.5, 1.5))
            elif kind == 1:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            else:
                angle, period = rng.uniform(0, np.pi), rng.uniform(0.02, 0.1)
                phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
                mask = ((phase % 1.0) < 0.5) & ((yy - cy) ** 2 + (xx - cx) ** 2 < 4 * r * r)
            img[mask] = colour
        images.append(to_uint8(img))
    return images


def augment(img: np.ndarray, *, flip_h: bool, flip_v: bool, rot90: int) -> np.ndarray:
    """Flip/rotate an H x W x C array (same op for HR and LR keeps them aligned)."""
    if flip_h:
        img = img[:, ::-1]
    if flip_v:
        img = img[::-1]
    if rot90:
        img = np.rot90(img, rot90, axes=(0, 1))
    return np.ascontiguousarray(img)


def make_lr(hr: np.ndarray, *, scale: int, quantize: bool = True) -> np.ndarray:
    """LR from an HR crop with the MATLAB-compatible bicubic (the eval issue's ``imresize``).

    Args:
        hr: H x W x 3 uint8 (H, W divisible by ``scale``).
        quantize: keep MATLAB's uint8 behaviour (rounded to 8 bits, as stored LR
            benchmark images are); ``False`` resizes in float without rounding.

    Returns:
        (H/scale) x (W/scale) x 3 float32 in [0, 1].
    """
    from spsr_cli.io.imresize import imresize

    if quantize:
        return imresize(np.ascontiguousarray(hr, dtype=np.uint8), 1.0 / scale).astype(np.float32) / 255.0
    lr = imresize(hr.astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(lr, 0.0, 1.0).astype(np.float32)


class TrainBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``s`` is the whole batch of training step ``s``.

    Returns ``{"lr": B x 3 x c/s x c/s, "hr": B x 3 x c x c}`` float32 in [0, 1],
    deterministic in ``(seed, rank, step)``.
    """

    def __init__(
        self,
        pool: ImagePool,
        *,
        batch_size: int,
        crop_size: int,
        scale: int,
        seed: int,
        rank: int = 0,
        flip: bool = True,
        rotate: bool = True,
        quantize_lr: bool = True,
    ) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.scale = scale
        self.seed = seed
        self.rank = rank
        self.flip = flip
        self.rotate = rotate
        self.quantize_lr = quantize_lr

    def __len__(self) -> int:
        return 2**62

    def sample(self, rng: np.random.Generator) -> tuple[Union[np.ndarray, None], np.ndarray]:
        """One augmented crop pair: (LR c/s x c/s x 3 uint8 in paired mode else None, HR c x c x 3 uint8)."""
        hr_img, lr_img = self.pool.get(int(rng.integers(len(self.pool))))
        c, s = self.crop_size, self.scale
        flip_h = self.flip and bool(rng.integers(2))
        flip_v = self.flip and bool(rng.integers(2))
        rot = int(rng.integers(4)) if self.rotate else 0
        if lr_img is None:
            h, w = hr_img.shape[:2]
            y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            return None, augment(hr_img[y : y + c, x : x + c], flip_h=flip_h, flip_v=flip_v, rot90=rot)
        lc = c // s
        h, w = lr_img.shape[:2]
        y, x = int(rng.integers(h - lc + 1)), int(rng.integers(w - lc + 1))
        lr = augment(lr_img[y : y + lc, x : x + lc], flip_h=flip_h, flip_v=flip_v, rot90=rot)
        hr = augment(hr_img[y * s : y * s + c, x * s : x * s + c], flip_h=flip_h, flip_v=flip_v, rot90=rot)
        return lr, hr

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, int(step)])
        pairs = [self.sample(rng) for _ in range(self.batch_size)]
        hr = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2)
        if pairs[0][0] is not None:
            lr = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255.0
        else:
            lr = downscale_batch(hr, scale=self.scale, quantize=self.quantize_lr)
        return {"lr": lr.contiguous(), "hr": (hr.float() / 255.0).contiguous()}


def downscale_batch(hr: torch.Tensor, *, scale: int, quantize: bool = True) -> torch.Tensor:
    """MATLAB-bicubic LR of a batch: N x 3 x H x W uint8 -> N x 3 x H/s x W/s float32 in [0, 1].

    Same result as :func:`make_lr` per image (one batched call is much faster).
    """
    from spsr_cli.io.imresize import imresize_tensor

    lr = imresize_tensor(hr.to(torch.float64), scale=1.0 / scale, quantise=quantize)
    if not quantize:
        lr = lr.clamp(0.0, 255.0)
    return (lr / 255.0).to(torch.float32)


def batch_loader(
    batches: TrainBatches, *, start_step: int, end_step: int, num_workers: int = 0, pin_memory: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of steps ``start_step .. end_step - 1``, in order (workers prefetch ahead)."""
    if start_step >= end_step:
        return iter(())
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start_step, end_step),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    return iter(loader)
