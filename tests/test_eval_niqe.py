"""spsr_cli.eval.niqe: NIQE (Mittal et al. 2013), checked against BasicSR's own on Set5."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from spsr_cli.eval.niqe import aggd_fit, gaussian_window, niqe, niqe_features, niqe_of_image
from spsr_cli.weights.niqe import NIQEError, NIQEModel, load_niqe_model

BASICSR_SDIST = "basicsr-1.4.2.tar.gz"
#: BasicSR 1.4.2's own NIQE (basicsr.metrics.niqe.niqe, run in float64 on the same rounded, 4-pixel-shaved
#: luma) of the bicubic x4 upscales of Set5's published LR images: an independent implementation.
BASICSR_SET5_BICUBIC = {"img_001": 7.5001, "img_002": 8.0628, "img_003": 9.4354, "img_004": 9.8665, "img_005": 7.3722}


def _assets() -> Path:
    return Path(os.environ.get("SPSR_TEST_ASSETS") or Path(__file__).resolve().parents[1] / ".test-assets")


def _pristine_model() -> NIQEModel:
    if not (_assets() / BASICSR_SDIST).is_file():
        pytest.skip(f"{BASICSR_SDIST} not in {_assets()} (run scripts/fetch_test_assets.sh)")
    return load_niqe_model(find_links=_assets())


def test_gaussian_window_is_matlabs_fspecial() -> None:
    w = gaussian_window()
    assert w.shape == (7, 7) and w.sum() == pytest.approx(1.0)
    ratio = w[3, 4] / w[3, 3]
    assert ratio == pytest.approx(math.exp(-1 / (2 * (7 / 6) ** 2)))


def test_aggd_fit_recovers_known_distributions() -> None:
    rng = np.random.default_rng(0)
    gauss = rng.normal(0.0, 3.0, (2, 200_000))
    alpha, left, right = aggd_fit(gauss)
    np.testing.assert_allclose(alpha, 2.0, atol=0.03)  # a Gaussian is a GGD of shape 2 ...
    np.testing.assert_allclose(left, 3.0 * math.sqrt(2), rtol=0.02)  # ... and spread sigma * sqrt(2)
    np.testing.assert_allclose(right, 3.0 * math.sqrt(2), rtol=0.02)
    laplace = rng.laplace(0.0, 1.0, (1, 200_000))
    assert aggd_fit(laplace)[0][0] == pytest.approx(1.0, abs=0.03)  # a Laplacian has shape 1
    skewed = np.where(gauss[:1] < 0, gauss[:1], 2 * gauss[:1])
    a, bl, br = aggd_fit(skewed)
    assert br[0] / bl[0] == pytest.approx(2.0, rel=0.03)
    assert np.isnan(aggd_fit(np.abs(gauss[:1]))[0][0])  # no negative samples: undefined, as in MATLAB


def test_features_per_block_and_size_limits() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 300)).astype(np.float64)
    feats = niqe_features(image)
    assert feats.shape == (2 * 3, 36) and np.isfinite(feats).all()
    with pytest.raises(NIQEError, match="96 x 96"):
        niqe_features(np.zeros((95, 300)))
    model = NIQEModel(mu=feats.mean(0), cov=np.eye(36))
    assert niqe(image, model) < niqe(np.kron(rng.integers(0, 256, (50, 75)), np.ones((4, 4))), model)


def test_set5_bicubic_matches_basicsr_within_0_01(shared_dir: Path) -> None:
    from spsr_cli.eval.datasets import read_rgb
    from spsr_cli.io.imresize import bicubic_upscale

    model = _pristine_model()
    lr_dir = shared_dir / "data" / "bench" / "Set5" / "LR_bicubic_X4"
    ours = {
        name: niqe_of_image(bicubic_upscale(read_rgb(lr_dir / f"{name}.png"), 4), model, border=4)
        for name in BASICSR_SET5_BICUBIC
    }
    for name, theirs in BASICSR_SET5_BICUBIC.items():
        assert ours[name] == pytest.approx(theirs, abs=0.01), name
    assert np.mean(list(ours.values())) == pytest.approx(np.mean(list(BASICSR_SET5_BICUBIC.values())), abs=0.002)
