"""spsr_cli.io.imresize: MATLAB-compatible bicubic imresize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spsr_cli.io.imresize import (
    bicubic_downscale,
    bicubic_upscale,
    crop_to_multiple,
    cubic,
    imresize,
    imresize_tensor,
    output_size,
    resize_matrix,
)


@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_reproduces_published_benchmark_lr(shared_dir: Path, name: str) -> None:
    """HR -> crop to x4 -> imresize(1/4) gives the published LR_bicubic_X4 images exactly (borders included)."""
    bench = shared_dir / "data" / "bench" / name
    for hr_path in sorted((bench / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path))
        published = np.asarray(Image.open(bench / "LR_bicubic_X4" / hr_path.name))
        ours = bicubic_downscale(hr, 4)
        assert ours.shape == published.shape and ours.dtype == np.uint8
        differ = int((ours != published).sum())
        assert differ == 0, f"{name}/{hr_path.name}: {differ} pixels differ from the published LR"


def test_cubic_kernel_values() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(cubic(x), expected)
    torch.testing.assert_close(cubic(-x), expected)


def test_upscale_weights_repeat_the_edge_pixel() -> None:
    """First output pixel of an x4 upscale: source position 0.625 (1-based), taps -1..2.

    MATLAB clamps out-of-range taps to the edge (``min(max(1, indices), in_length)``), so the
    taps at -1 and 0 both land on pixel 1: cubic(1.625) + cubic(0.625) + cubic(0.375) on pixel 1,
    cubic(1.375) on pixel 2 (a mirrored border would give 1.1171875 / -0.1171875).
    """
    m = resize_matrix(8, 32, 4.0)
    c = cubic(torch.tensor([1.625, 0.625, 0.375, 1.375], dtype=torch.float64))
    expected = torch.stack([c[0] + c[1] + c[2], c[3], torch.tensor(0.0, dtype=torch.float64)])
    torch.testing.assert_close(m[0, :3], expected)
    torch.testing.assert_close(m[-1, -3:], expected.flip(0))
    torch.testing.assert_close(m.sum(dim=1), torch.ones(32, dtype=torch.float64))


def test_downscale_is_antialiased() -> None:
    """Shrinking by 4 stretches the kernel to 16 taps (a plain bicubic would use 4)."""
    m = resize_matrix(64, 16, 0.25)
    assert int((m[8] != 0).sum()) == 16
    assert float(m[8].max()) < 0.25


def test_output_size_rule_is_ceil() -> None:
    assert output_size((10, 7), 0.25) == (3, 2)
    out = imresize(np.zeros((10, 7, 3), np.uint8), 0.25)
    assert out.shape == (3, 2, 3)
    assert imresize(np.zeros((5, 3), np.uint8), 4.0).shape == (20, 12)


def test_constant_image_stays_constant_and_uint8_rounds() -> None:
    img = np.full((12, 9, 3), 77, np.uint8)
    assert (imresize(img, 0.25) == 77).all()
    assert (imresize(img, 4.0) == 77).all()
    ramp = np.tile(np.linspace(0, 255, 16), (16, 1)).astype(np.uint8)
    up = imresize(ramp, 4.0)
    assert up.dtype == np.uint8 and up.min() >= 0 and up.max() <= 255


def test_float_input_is_not_rounded_and_matches_tensor_path() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((16, 12, 3))
    out = imresize(img, 0.5)
    assert out.dtype == np.float64 and not np.allclose(out, np.round(out))
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    via_tensor = imresize_tensor(t, scale=0.5)[0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(via_tensor, out, atol=1e-5)


def test_up_then_down_roughly_inverts() -> None:
    yy, xx = np.mgrid[0:16, 0:16]
    smooth = (127 + 100 * np.sin(yy / 5.0) * np.cos(xx / 4.0)).astype(np.uint8)
    lr = np.stack([smooth, smooth.T, 255 - smooth], axis=-1)
    back = bicubic_downscale(bicubic_upscale(lr, 4), 4)
    assert np.abs(back.astype(int) - lr).mean() < 2


def test_crop_to_multiple() -> None:
    assert crop_to_multiple(np.zeros((13, 10, 3)), 4).shape == (12, 8, 3)
    assert crop_to_multiple(np.zeros((13, 10)), 4).shape == (12, 8)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="uint8 or float"):
        imresize(np.zeros((4, 4), np.int32), 0.5)
    with pytest.raises(ValueError, match="positive"):
        imresize_tensor(torch.zeros(4, 4), scale=0)
