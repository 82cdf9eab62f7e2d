"""Training validation: the held-out split (never trained on) and scores equal to `spsr eval`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.eval.datasets import local_source
from spsr_cli.eval.lpips import LPIPS
from spsr_cli.eval.runner import evaluate
from spsr_cli.io.imresize import bicubic_downscale
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.train.data import ImagePool, held_out_files, is_held_out
from spsr_cli.train.validation import folder_pairs, holdout_pairs, validate
from spsr_cli.weights.store import write_generator_file


def _photos(folder: Path, count: int, size: tuple[int, int] = (40, 44)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"photo{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_held_out_split_is_by_name() -> None:
    names = [f"img{i}.png" for i in range(400)]
    held = [n for n in names if is_held_out(Path("a") / n, 10)]
    assert held == [n for n in names if is_held_out(Path("b") / n, 10)]  # folder does not matter
    assert 20 < len(held) < 60 and not any(is_held_out(Path(n), 0) for n in names)


def test_no_file_is_both_trained_on_and_validated_on(tmp_path: Path) -> None:
    paths = _photos(tmp_path / "a", 30) + _photos(tmp_path / "b", 30)
    folders = [tmp_path / "a", tmp_path / "b"]
    pool = ImagePool(hr_dirs=folders, crop_size=32, scale=4, holdout_percent=20)
    trained = {r.hr_path for r in pool.records}
    held = set(held_out_files(folders, 20))
    assert held and trained and not trained & held
    assert trained | held == set(paths) and set(pool.held_out) == held
    pairs = holdout_pairs(folders, percent=20, crop_size=32, scale=4, max_images=100)
    assert [p.name for p in pairs] == [p.stem for p in held_out_files(folders, 20)]
    for pair in pairs:  # a fixed centre crop, LR by the eval bicubic
        assert pair.hr.shape == (32, 32, 3) and np.array_equal(pair.lr, bicubic_downscale(pair.hr, 4))
    assert not ImagePool(hr_dirs=folders, crop_size=32, scale=4).held_out


def test_several_fixed_crops_per_image_and_small_images_give_their_largest_crop(tmp_path: Path) -> None:
    folders = [tmp_path / "a"]
    _photos(tmp_path / "a", 30, size=(40, 64))
    held = held_out_files(folders, 20)
    pairs = holdout_pairs(folders, percent=20, crop_size=32, scale=4, max_images=100, crops_per_image=2)
    assert [p.name for p in pairs] == [f"{p.stem}-{k}" for p in held for k in (1, 2)]
    first = np.asarray(Image.open(held[0]).convert("RGB"))
    assert np.array_equal(pairs[0].hr, first[3:35, 11:43]) and np.array_equal(pairs[1].hr, first[5:37, 21:53])
    assert all(np.array_equal(p.lr, bicubic_downscale(p.hr, 4)) for p in pairs)
    again = holdout_pairs(folders, percent=20, crop_size=32, scale=4, max_images=100, crops_per_image=2)
    assert all(np.array_equal(a.hr, b.hr) for a, b in zip(pairs, again))  # fixed, not random
    small = holdout_pairs(folders, percent=20, crop_size=48, scale=4, max_images=2)
    assert len(small) == 2 and all(p.hr.shape == (40, 40, 3) for p in small)  # 40x64 gives its 40 px crop


def test_validation_scores_equal_spsr_eval_on_the_same_crops(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = SPSRConfig(nf=8, nb=2, gc=4)
    model = SPSRNet(config=config)
    weights = tmp_path / "m.safetensors"
    write_generator_file(weights, model.state_dict(), config, source="test", licence="MIT", dtype=torch.float32)
    _photos(tmp_path / "train", 40, size=(48, 52))
    pairs = holdout_pairs([tmp_path / "train"], percent=30, crop_size=32, scale=4, max_images=4)
    assert len(pairs) == 4
    crops = tmp_path / "crops"
    crops.mkdir()
    for pair in pairs:
        Image.fromarray(pair.hr).save(crops / f"{pair.name}.png")
    torch.manual_seed(1)
    lpips_net = LPIPS().eval().requires_grad_(False)  # random weights: the same network on both sides
    ours = validate(model, pairs, device=torch.device("cpu"), scale=4, lpips_net=lpips_net)
    theirs = evaluate(
        local_source(crops, None),
        model=str(weights),
        options=InferenceOptions(device="cpu", precision="fp32"),
        lpips_model=lpips_net,
        niqe=False,
    ).means
    for key in ("psnr", "ssim", "lpips"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key
    assert {"branch_l1", "branch_psnr", "bicubic_branch_l1", "bicubic_branch_psnr"} <= set(ours)


def test_folder_validation_pairs_like_spsr_eval(tmp_path: Path) -> None:
    hr_dir = tmp_path / "val"
    hr_dir.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(hr_dir / "a.png")
    Image.fromarray(rng.integers(0, 256, (42, 57, 3), dtype=np.uint8)).save(hr_dir / "b.png")
    pairs = folder_pairs(hr_dir, None, scale=4, max_images=5)
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[1].hr.shape == (40, 56, 3) and pairs[1].lr.shape == (10, 14, 3)
