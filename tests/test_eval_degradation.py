"""The --degradation pipeline: parsing, determinism and what each stage does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spsr_cli.errors import UsageError
from spsr_cli.eval.degradation import (
    Degradation,
    decode_jpeg,
    encode_jpeg,
    gaussian_blur,
    gaussian_kernel,
    parse_degradation,
)
from spsr_cli.io.imresize import bicubic_downscale
from spsr_cli.io.jpeg_quality import estimate_jpeg_quality


def _hr(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture test photo, H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    return (base * 0.8 + rng.uniform(0, 50, (h, w, 3))).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jpeg:50", Degradation(jpeg=50)),
        ("jpeg:30,noise:5", Degradation(jpeg=30, noise=5.0)),
        ("noise:2.5, blur:1.2 ,JPEG:70", Degradation(jpeg=70, noise=2.5, blur=1.2)),
        ("bicubic", Degradation()),
        ("noise:3,seed:7", Degradation(noise=3.0, seed=7)),
    ],
)
def test_parse_accepts_items_in_any_order(text: str, expected: Degradation) -> None:
    assert parse_degradation(text) == expected


def test_spec_is_canonical_in_pipeline_order() -> None:
    assert parse_degradation("jpeg:30,noise:5,blur:1.5").spec == "blur:1.5,noise:5,jpeg:30"
    assert parse_degradation("bicubic").spec == "bicubic"
    assert parse_degradation(parse_degradation("noise:3,seed:7,jpeg:9").spec) == Degradation(jpeg=9, noise=3, seed=7)
    doc = Degradation(jpeg=40).to_dict()
    assert doc["spec"] == "jpeg:40" and doc["order"] == ["bicubic", "blur", "noise", "jpeg"]
    assert doc["jpeg_subsampling"] == "4:2:0"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("jpeg:50,", "empty item"),
        ("jpeg", "KIND:VALUE"),
        ("sharpen:2", "KIND:VALUE"),
        ("jpeg:0", "1..100"),
        ("jpeg:101", "1..100"),
        ("jpeg:fifty", "not a whole number"),
        ("noise:-1", "between 0 and 255"),
        ("noise:nan", "between 0 and 255"),
        ("blur:x", "not a number"),
        ("jpeg:50,jpeg:40", "twice"),
        ("seed:-2", ">= 0"),
    ],
)
def test_bad_specs_are_usage_errors_naming_the_problem(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_degradation(text)


def test_bicubic_alone_is_the_benchmark_lr() -> None:
    hr = _hr()
    assert np.array_equal(Degradation().apply(hr, "a"), bicubic_downscale(hr, 4))


def test_pipeline_is_deterministic_per_name_and_seed() -> None:
    hr = _hr()
    pipeline = parse_degradation("blur:0.8,noise:5,jpeg:40")
    first = pipeline.apply(hr, "baby")
    assert first.shape == (24, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, pipeline.apply(hr, "baby"))  # reruns repeat
    assert not np.array_equal(first, pipeline.apply(hr, "bird"))  # each image its own noise
    assert not np.array_equal(first, parse_degradation("blur:0.8,noise:5,jpeg:40,seed:1").apply(hr, "baby"))


def test_noise_has_the_stated_sigma() -> None:
    hr = np.full((512, 512, 3), 128, dtype=np.uint8)  # flat: bicubic leaves it exactly 128
    lr = parse_degradation("noise:5").apply(hr, "flat")
    residual = lr.astype(np.float64) - 128.0
    assert abs(residual.mean()) < 0.1
    assert residual.std() == pytest.approx(5.0, rel=0.03)  # 49152 samples, plus rounding to levels
    # colour noise: the channels are independent
    r, g = residual[..., 0].ravel(), residual[..., 1].ravel()
    assert abs(np.corrcoef(r, g)[0, 1]) < 0.05


def test_blur_sigma_zero_is_identity_and_blur_smooths_as_a_gaussian() -> None:
    hr = _hr()
    assert np.array_equal(parse_degradation("blur:0").apply(hr, "a"), bicubic_downscale(hr, 4))
    image = np.zeros((41, 41, 1))
    image[20, 20, 0] = 1.0
    blurred = gaussian_blur(image, 2.0)[..., 0]
    assert blurred.sum() == pytest.approx(1.0)  # the kernel sums to 1
    row = blurred[20]
    assert row[22] / row[20] == pytest.approx(np.exp(-0.5), rel=1e-9)  # separable Gaussian
    assert len(gaussian_kernel(1.2)) == 2 * 4 + 1  # radius ceil(3 sigma)
    lr = parse_degradation("blur:1.5").apply(_hr(), "a").astype(np.float64)
    plain = bicubic_downscale(_hr(), 4).astype(np.float64)
    texture = lambda a: np.abs(np.diff(a, n=2, axis=1)).mean()  # noqa: E731 - second differences: fine detail
    assert texture(lr) < 0.3 * texture(plain)


@pytest.mark.parametrize("quality", [30, 50, 90])
def test_jpeg_stage_encodes_at_the_stated_quality(quality: int) -> None:
    lr = bicubic_downscale(_hr(), 4)
    data = encode_jpeg(lr, quality)
    assert estimate_jpeg_quality(data) == quality
    with Image.open(io.BytesIO(data)) as im:
        assert im.layer[0][1:3] == (2, 2) and im.layer[1][1:3] == (1, 1)  # 4:2:0
    assert np.array_equal(parse_degradation(f"jpeg:{quality}").apply(_hr(), "a"), decode_jpeg(data))
    # lower quality, larger error against the clean LR
    errors = [np.abs(decode_jpeg(encode_jpeg(lr, q)).astype(int) - lr).mean() for q in (20, quality, 95)]
    assert errors[0] >= errors[1] >= errors[2]
