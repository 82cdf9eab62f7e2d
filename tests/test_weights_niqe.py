"""spsr_cli.weights.niqe: NIQE's pristine model, read without pickles from the pinned BasicSR archive."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from spsr_cli.weights.niqe import NIQEError, NIQEModel, load_niqe_model, model_from_npz

BASICSR_SDIST = "basicsr-1.4.2.tar.gz"


def _assets() -> Path:
    return Path(os.environ.get("SPSR_TEST_ASSETS") or Path(__file__).resolve().parents[1] / ".test-assets")


def _pristine_model() -> NIQEModel:
    if not (_assets() / BASICSR_SDIST).is_file():
        pytest.skip(f"{BASICSR_SDIST} not in {_assets()} (run scripts/fetch_test_assets.sh)")
    return load_niqe_model(find_links=_assets())


def test_model_from_npz_reads_arrays_only() -> None:
    good = io.BytesIO()
    np.savez(good, mu_pris_param=np.zeros((1, 36)), cov_pris_param=np.eye(36))
    model = model_from_npz(good.getvalue())
    assert model.mu.shape == (36,) and model.cov.shape == (36, 36)
    wrong = io.BytesIO()
    np.savez(wrong, mu_pris_param=np.zeros(35), cov_pris_param=np.eye(36))
    with pytest.raises(NIQEError, match="shapes"):
        model_from_npz(wrong.getvalue())
    pickled = io.BytesIO()
    np.savez(pickled, mu_pris_param=np.array([{"a": 1}], dtype=object), cov_pris_param=np.eye(36))
    with pytest.raises(NIQEError):
        model_from_npz(pickled.getvalue())


def test_offline_without_the_archive_is_a_clear_error() -> None:
    from spsr_cli.errors import WeightsNotAvailableError

    with pytest.raises(WeightsNotAvailableError, match="basicsr"):
        load_niqe_model(offline=True)


def test_pristine_model_from_the_pinned_archive() -> None:
    model = _pristine_model()
    assert model.mu.shape == (36,) and np.allclose(model.cov, model.cov.T)
    assert "basicsr==1.4.2" in model.source
