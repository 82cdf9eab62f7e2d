"""Training data: crops, augmentation, MATLAB-bicubic LR, paired mode, bad images, determinism."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_cli.io.imresize import imresize
from spsr_cli.train.data import (
    ImagePool,
    NoTrainingImagesError,
    TrainBatches,
    augment,
    batch_loader,
    make_lr,
    synthetic_images,
)


def _save(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


def _rand(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def hr_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    _save(folder / "a.png", _rand(48, 40, 1))
    _save(folder / "b.png", _rand(40, 56, 2))
    return folder


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_bad_and_small_images_are_skipped_with_a_warning(hr_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (hr_dir / "broken.png").write_bytes(b"not a png")
    _save(hr_dir / "small.png", _rand(16, 64, 3))
    (hr_dir / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        pool = ImagePool(hr_dirs=[hr_dir], crop_size=32, scale=4)
    assert len(pool) == 2
    assert {p.name for p, _ in pool.skipped} == {"broken.png", "small.png"}
    assert "broken.png" in caplog.text and "small.png" in caplog.text
    assert all(r.hr is not None for r in pool.records)  # decoded once, cached


def test_cache_budget_zero_decodes_on_access(hr_dir: Path) -> None:
    pool = ImagePool(hr_dirs=[hr_dir], crop_size=32, scale=4, cache_mb=0)
    assert all(r.hr is None for r in pool.records)
    hr, lr = pool.get(0)
    assert hr.shape == (48, 40, 3) and lr is None


def test_no_usable_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoTrainingImagesError, match="no usable"):
        ImagePool(hr_dirs=[tmp_path / "empty"], crop_size=32, scale=4)
    with pytest.raises(NoTrainingImagesError, match="does not exist"):
        ImagePool(hr_dirs=[tmp_path / "missing"], crop_size=32, scale=4)


def test_batches_are_crops_with_matlab_bicubic_lr(hr_dir: Path) -> None:
    pool = ImagePool(hr_dirs=[hr_dir], crop_size=32, scale=4)
    batches = TrainBatches(pool, batch_size=5, crop_size=32, scale=4, seed=0, flip=False, rotate=False)
    batch = batches[3]
    assert batch["hr"].shape == (5, 3, 32, 32) and batch["lr"].shape == (5, 3, 8, 8)
    assert batch["hr"].dtype == torch.float32 and 0 <= batch["hr"].min() and batch["hr"].max() <= 1
    sources = [pool.get(i)[0] for i in range(len(pool))]
    for hr, lr in zip(batch["hr"], batch["lr"]):
        crop = _to_u8(hr)
        # without augmentation every crop is a window of one of the images
        assert any(_contains(src, crop) for src in sources)
        np.testing.assert_array_equal(_to_u8(lr), imresize(crop, 0.25))


def _contains(src: np.ndarray, crop: np.ndarray) -> bool:
    c = crop.shape[0]
    return any(
        np.array_equal(src[y : y + c, x : x + c], crop)
        for y in range(src.shape[0] - c + 1)
        for x in range(src.shape[1] - c + 1)
    )


def test_batches_are_deterministic_per_seed_rank_and_step(hr_dir: Path) -> None:
    pool = ImagePool(hr_dirs=[hr_dir], crop_size=32, scale=4)
    make = lambda **kw: TrainBatches(pool, batch_size=3, crop_size=32, scale=4, **kw)  # noqa: E731
    a, b = make(seed=1, rank=0)[5], make(seed=1, rank=0)[5]
    assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    assert not torch.equal(a["hr"], make(seed=1, rank=0)[6]["hr"])
    assert not torch.equal(a["hr"], make(seed=1, rank=1)[5]["hr"])
    assert not torch.equal(a["hr"], make(seed=2, rank=0)[5]["hr"])
    loaded = list(batch_loader(make(seed=1, rank=0), start_step=4, end_step=7))
    assert len(loaded) == 3 and torch.equal(loaded[1]["hr"], a["hr"])


def test_augment_flips_and_rotates() -> None:
    img = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    np.testing.assert_array_equal(augment(img, flip_h=True, flip_v=False, rot90=0), img[:, ::-1])
    np.testing.assert_array_equal(augment(img, flip_h=False, flip_v=True, rot90=0), img[::-1])
    assert augment(img, flip_h=False, flip_v=False, rot90=1).shape == (3, 2, 1)


def test_augmentation_keeps_lr_consistent(hr_dir: Path) -> None:
    pool = ImagePool(hr_dirs=[hr_dir], crop_size=32, scale=4)
    batch = TrainBatches(pool, batch_size=8, crop_size=32, scale=4, seed=0)[0]
    for hr, lr in zip(batch["hr"], batch["lr"]):
        np.testing.assert_array_equal(_to_u8(lr), imresize(_to_u8(hr), 0.25))


def test_paired_mode_crops_matching_windows(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    hr = _rand(64, 48, 5)
    _save(tmp_path / "hr" / "x.png", hr)
    lr_full = _rand(16, 12, 6)  # unrelated content: alignment is checked by position only
    _save(tmp_path / "lr" / "x.png", lr_full)
    _save(tmp_path / "hr" / "orphan.png", _rand(64, 48, 7))
    pool = ImagePool(hr_dirs=[tmp_path / "hr"], lr_dirs=[tmp_path / "lr"], crop_size=32, scale=4)
    assert len(pool) == 1 and pool.skipped[0][0].name == "orphan.png"
    batch = TrainBatches(pool, batch_size=4, crop_size=32, scale=4, seed=0, flip=False, rotate=False)[0]
    for hr_t, lr_t in zip(batch["hr"], batch["lr"]):
        lr_crop, hr_crop = _to_u8(lr_t), _to_u8(hr_t)
        hits = [
            (y, x)
            for y in range(16 - 8 + 1)
            for x in range(12 - 8 + 1)
            if np.array_equal(lr_full[y : y + 8, x : x + 8], lr_crop)
        ]
        assert any(np.array_equal(hr[4 * y : 4 * y + 32, 4 * x : 4 * x + 32], hr_crop) for y, x in hits)


def test_make_lr_float_mode_is_unrounded() -> None:
    hr = _rand(32, 32, 9)
    lr = make_lr(hr, scale=4, quantize=False)
    assert lr.shape == (8, 8, 3) and lr.dtype == np.float32
    np.testing.assert_allclose(lr, np.clip(imresize(hr / 255.0, 0.25), 0, 1), atol=1e-6)


def test_synthetic_images_join_the_pool() -> None:
    a, b = synthetic_images(2, size=64, seed=3), synthetic_images(2, size=64, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].shape == (64, 64, 3)
    pool = ImagePool(hr_dirs=[], crop_size=32, scale=4, synthetic=3)
    assert len(pool) == 3


def test_loader_workers_give_the_same_batches(hr_dir: Path) -> None:
    pool = ImagePool(hr_dirs=[hr_dir], crop_size=32, scale=4)
    batches = TrainBatches(pool, batch_size=2, crop_size=32, scale=4, seed=0)
    with_workers = list(batch_loader(batches, start_step=2, end_step=5, num_workers=2))
    for step, batch in zip(range(2, 5), with_workers):
        assert torch.equal(batch["hr"], batches[step]["hr"]) and torch.equal(batch["lr"], batches[step]["lr"])


def test_training_reads_pixels_as_spsr_eval_does(tmp_path: Path) -> None:
    """EXIF orientation applied (also to the size probe) and 16-bit rounded, exactly as eval's read_rgb."""
    from spsr_cli.eval.datasets import read_rgb

    folder = tmp_path / "hr"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(_rand(40, 56, 4)).save(folder / "rotated.png", exif=exif)
    values = np.random.default_rng(5).integers(0, 65536, (48, 36), dtype=np.uint16)
    Image.fromarray(values).save(folder / "grey16.png")
    for cache_mb in (4096, 0):
        pool = ImagePool(hr_dirs=[folder], crop_size=36, scale=4, cache_mb=cache_mb)
        assert [r.hr_path.name for r in pool.records] == ["grey16.png", "rotated.png"]
        assert [r.hr_size for r in pool.records] == [(36, 48), (40, 56)]  # (width, height) as displayed
        for index, record in enumerate(pool.records):
            np.testing.assert_array_equal(pool.get(index)[0], read_rgb(record.hr_path))
    grey = pool.get(0)[0]
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(grey[..., 1], expected)
