"""Start without torch: images through a model OpenVINO has converted before.

Importing torch and building the network cost a run about 1.8 s before its first pixel (2-core EPYC:
torch 1.0-1.4 s, the network 0.3 s, its weights' sha256 0.1 s); a converted model needs neither, and on
a CPU with AMX a 160 x 160 photo takes OpenVINO about 1.5 s. So :func:`fast_choice` runs the images of
``spsr upscale`` through the cached OpenVINO model alone when all of this holds (else None: the usual path):

* one model: a weights file's path, or a registry name whose file is on disk (shipped, imported, or
  downloaded and converted before: :func:`~spsr_cli.weights.local.model_file`) and matches its pin;
  under ``--model auto`` each model the images choose (:class:`AutoLoader`);
* ``--backend auto`` or ``openvino``, on the CPU (``--device cpu``, or ``auto`` where no GPU can be:
  :func:`~spsr_cli.engine.device.gpu_possible`), ``--precision`` default, bf16 or fp32, no ``--compile``,
  and no warm-up (``--json`` times images without one-off costs: the usual path does that);
* a card in the cache names the model file's sha256 (:func:`remember`: written by the usual path when
  OpenVINO ran the model), and the cache holds the model converted for any shape.

Images, tiles and memory are planned as always (:class:`~spsr_cli.engine.tiles.Tiler`), so the outputs
are the usual path's, byte for byte. Where OpenVINO cannot go on (no converted model any more, a shape it
cannot compile), torch is imported then and the usual backends take over, as ``--backend auto`` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from spsr_cli.engine.device import cpu_precision, gpu_possible
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiles import Tiler
from spsr_cli.errors import BackendError, SPSRError
from spsr_cli.files import atomic_path, sha256_file
from spsr_cli.model import code_sha256
from spsr_cli.weights.local import model_file
from spsr_cli.weights.manifest import load_manifest_json, parse_source

if TYPE_CHECKING:
    from spsr_cli.engine.model_choice import ModelChoice
    from spsr_cli.engine.openvino_runtime import CompiledModels

log = logging.getLogger(__name__)

#: OpenVINO's precision hint -> the dtype's name in torch (what reports say: ``bf16``, ``fp32``).
_DTYPE_NAMES = {"bf16": "bfloat16", "f32": "float32"}


@dataclasses.dataclass(frozen=True)
class TileFacts:
    """What the tiles need of a network's config (:class:`~spsr_cli.model.architectures.GeneratorConfig`),
    kept in its card so that no torch is needed to read them."""

    architecture: str
    scale: int
    in_channels: int
    receptive_radius: int
    tile_context: int
    tile_align: int
    work_channels: int
    macs_per_input_pixel: float

    @classmethod
    def of(cls, config: Any) -> TileFacts:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------- cards


def _card_path(file_sha256: str) -> Path:
    from spsr_cli.engine.openvino_runtime import cache_root

    return cache_root() / "files" / f"{file_sha256}.json"


def remember(file_sha256: str, conversion_key: str, config: Any) -> None:
    """Write the card of a weights file OpenVINO ran: its sha256 -> the cache key of its converted models
    (:func:`~spsr_cli.engine.openvino_backend.conversion_key` of the module built from it) and its
    :class:`TileFacts`. Atomic; a card that cannot be written costs the next run its fast start, nothing more."""
    card = {"weights": conversion_key, "code": code_sha256(), "tiles": dataclasses.asdict(TileFacts.of(config))}
    path = _card_path(file_sha256)
    try:
        if path.is_file() and json.loads(path.read_text(encoding="utf-8")) == card:
            return
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(card, sort_keys=True), encoding="utf-8")
    except (OSError, ValueError) as err:
        log.debug("OpenVINO cache: cannot write the card %s (%s)", path, err)


def _read_card(file_sha256: str) -> tuple[str, TileFacts] | None:
    """The weights key and facts of a card written by this code; None when there is none (or it is stale)."""
    try:
        card = json.loads(_card_path(file_sha256).read_text(encoding="utf-8"))
        if card.get("code") != code_sha256():
            return None
        return str(card["weights"]), TileFacts(**card["tiles"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the weights file, without torch


def _weights_file(
    source: str | None, models: dict[str, dict[str, Any]], default: str | None
) -> tuple[Path, str] | None:
    """The local file ``--model`` names and its sha256, found as the usual loader finds it
    (:func:`~spsr_cli.weights.loader.resolve_weights`: a path to a file, else a registry name whose file is
    on disk and matches its pin); None when only that loader can tell (it downloads, converts and says what
    is wrong). ``models``, ``default``: the registry's raw entries and default name
    (:func:`~spsr_cli.weights.manifest.load_manifest_json`)."""
    if source is not None:
        path = Path(source).expanduser()
        if path.suffix and path.is_file():
            return path, sha256_file(path)
    name = default if source is None else str(source)
    raw = models.get(name) if name is not None else None
    if not isinstance(raw, dict) or not isinstance(raw.get("source"), dict):
        return None
    found = model_file(name, parse_source(raw["source"], name))
    if found is None:
        return None
    digest = sha256_file(found)
    return (found, digest) if digest == raw.get("sha256") else None


# ---------------------------------------------------------------- the upscaler


class _Backend:
    """A backend on arrays: the cached OpenVINO model, or (after a fall-back) one of the usual backends."""

    def __init__(self, name: str, dtype: str, run: Callable[[np.ndarray, bool], np.ndarray], describe: str) -> None:
        self.name = name
        self.dtype = dtype  # the dtype's name in torch (torch is not loaded)
        self._run = run
        self._describe = describe

    def run(self, patch: np.ndarray, fp32: bool = False) -> np.ndarray:
        return self._run(patch, fp32)

    def describe(self) -> str:
        return self._describe


class CachedOpenVINOUpscaler(Tiler):
    """An :class:`~spsr_cli.engine.tiling.Upscaler` of a converted model, without torch (see the module docstring).

    Args:
        facts: the network's :class:`TileFacts`.
        models: its cache folder (:class:`~spsr_cli.engine.openvino_runtime.CompiledModels`, no converter).
        options: the run's options (``backend`` auto or openvino, on the CPU).
        hint: OpenVINO's precision (``bf16`` or ``f32``).
        load: loads the network (imports torch) for the usual backends, when OpenVINO cannot go on.

    ``device`` is ``"cpu"`` and ``dtype`` the precision's name in torch (``bfloat16``, ``float32``).
    """

    def __init__(
        self,
        facts: TileFacts,
        models: CompiledModels,
        options: InferenceOptions,
        hint: str,
        load: Callable[[], Any],
    ) -> None:
        self._setup(facts, options, "cpu")
        self.device = "cpu"
        self.backend_choice = str(options.backend).strip().lower()
        self.dtype = _DTYPE_NAMES[hint]
        self._precision = options.precision
        self._load = load
        self._models = models
        self.backend = self._openvino(models, hint)
        self._video = False  # inside one_backend(): a video's frames
        self._start_tile(options)

    @staticmethod
    def _openvino(models: CompiledModels, hint: str) -> _Backend:
        from spsr_cli.engine.openvino_runtime import openvino_version

        def run(patch: np.ndarray, fp32: bool) -> np.ndarray:
            return models.infer(patch, "f32" if fp32 else hint)

        label = f"openvino {openvino_version().split('-')[0]} on the CPU, {hint} (cached; torch not loaded)"
        return _Backend("openvino", _DTYPE_NAMES[hint], run, label)

    @property
    def compute_itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4

    @property
    def itemsize(self) -> int:
        """As the usual upscaler plans: under ``auto`` the wider of OpenVINO's and torch's precision."""
        if self.backend_choice != "auto":
            return self.compute_itemsize
        return max(self.compute_itemsize, 2 if cpu_precision(self._precision, "torch") == "bfloat16" else 4)

    def _choose_backend(self, height: int, width: int) -> None:
        if not self._video:
            log.debug("%d x %d image: %s", width, height, self.backend.describe())

    @contextlib.contextmanager
    def one_backend(self, height: int, width: int, count: int = 1) -> Iterator[_Backend]:
        """A video's frames: said once, not per frame (the backend is the same for all of them)."""
        log.debug("%d x %d frames: %s", width, height, self.backend.describe())
        self._video = True
        try:
            yield self.backend
        finally:
            self._video = False

    def _usual(self, name: str) -> _Backend:
        """The usual backend ``name`` (torch, or OpenVINO able to convert) on arrays; imports torch."""
        import torch

        from spsr_cli.engine.backends import make_backend
        from spsr_cli.engine.device import resolve_dtype

        device = torch.device("cpu")
        dtype = resolve_dtype(device, self._precision, name)
        backend = make_backend(name, self._load(), device, dtype)

        def run(patch: np.ndarray, fp32: bool) -> np.ndarray:
            with torch.inference_mode():
                out = backend.run(torch.from_numpy(patch), torch.float32 if fp32 else None)
            return out.float().numpy()

        return _Backend(name, str(dtype).removeprefix("torch."), run, backend.describe())

    def _forward(self, patch: np.ndarray) -> np.ndarray:
        """N x 3 x h x w float32 patch -> N x 3 x sh x sw float32 array, finite (as ``Upscaler._forward``)."""
        from spsr_cli.engine.openvino_runtime import NotConverted

        patch = np.asarray(patch, dtype=np.float32)
        try:
            sr = self.backend.run(patch)
        except NotConverted as err:  # the cache lost its converted model: convert it, as the usual path does
            log.warning("%s; converting it again", err)
            self.backend = self._usual("openvino")
            sr = self.backend.run(patch)
        except BackendError as err:
            if self.backend_choice != "auto" or self.backend.name == "torch":
                raise
            log.warning("%s; running it with torch", err)
            self.backend_choice = "torch"
            self.backend = self._usual("torch")
            sr = self.backend.run(patch)
        if self.backend.dtype != "float32" and not np.isfinite(sr).all():
            log.warning("a tile overflowed in %s (NaN/Inf); recomputing it in float32", self.backend.dtype)
            sr = self.backend.run(patch, True)
        return sr


# ---------------------------------------------------------------- the choice


def fast_upscaler(
    model: Any, options: InferenceOptions, *, warm_up: bool = False, registry: tuple[Any, Any] | None = None
) -> CachedOpenVINOUpscaler | None:
    """A :class:`CachedOpenVINOUpscaler` of ``model`` (a :class:`~spsr_cli.engine.batch.ModelLoader`, whose
    ``path``, ``sha256`` and ``load_seconds`` it fills) when it and ``options`` allow a start without torch
    (the module docstring says when); None otherwise. ``registry``: :func:`load_manifest_json`'s answer,
    when the caller has read it."""
    from spsr_cli.engine import openvino_runtime
    from spsr_cli.engine.batch import ModelLoader

    device = str(options.device).strip().lower()
    if (
        not isinstance(model, ModelLoader)
        or model.module is not None
        or warm_up
        or options.compile
        or str(options.backend).strip().lower() not in ("auto", "openvino")
        or not (device == "cpu" or (device == "auto" and not gpu_possible()))
        or options.precision not in (None, "bf16", "fp32")
        or not openvino_runtime.openvino_installed()
    ):
        return None
    started = time.perf_counter()
    try:
        models_raw, default_name = registry if registry is not None else load_manifest_json()
        found = _weights_file(model.source, models_raw, default_name)
        card = _read_card(found[1]) if found is not None else None
        if found is None or card is None:
            return None
        path, file_sha256 = found
        weights, facts = card
        from spsr_cli.engine.openvino_runtime import CompiledModels, cache_root, read_header

        models = CompiledModels(cache_root() / weights)
        if not read_header(models.cache_dir / "ir.ovc").get("dynamic"):
            return None  # converted per shape (or not at all): the usual path converts what it needs
    except (SPSRError, OSError, ValueError, ImportError):
        return None
    hint = "bf16" if cpu_precision(options.precision, "openvino") == "bfloat16" else "f32"
    upscaler = CachedOpenVINOUpscaler(facts, models, options, hint, load=model)
    model.path, model.sha256 = path, file_sha256
    model.load_seconds = time.perf_counter() - started
    log.debug(
        "model %s: %s, sha256 %s (converted for OpenVINO before: torch is not loaded)",
        model.source or "(default)",
        path,
        file_sha256,
    )
    return upscaler


def fast_choice(model: Any, options: InferenceOptions, *, warm_up: bool = False) -> ModelChoice | None:
    """A :class:`~spsr_cli.engine.model_choice.ModelChoice` of :func:`fast_upscaler`'s upscaler for
    :func:`~spsr_cli.engine.batch.run_jobs`, or None (the usual path)."""
    from spsr_cli.engine.model_choice import ModelChoice

    try:
        registry = load_manifest_json()
    except (SPSRError, OSError, ValueError):
        return None
    upscaler = fast_upscaler(model, options, warm_up=warm_up, registry=registry)
    if upscaler is None:
        return None
    return ModelChoice(model.source, options, load=lambda _: upscaler, default_name=registry[1])


class AutoLoader:
    """``--model auto``'s loader for :class:`~spsr_cli.engine.model_choice.ModelChoice`: the upscaler of each
    model the images choose, through :func:`fast_upscaler` where that model's file has a card, else built
    as usual (torch). ``usual``: the (loader, upscaler) pairs built as usual, whose cards
    :func:`remember_usual` writes after the run."""

    def __init__(self, options: InferenceOptions, *, offline: bool | None = None, warm_up: bool = False) -> None:
        self._options = options
        self._offline = offline
        self._warm_up = warm_up
        self.usual: list[tuple[Any, Tiler]] = []

    def __call__(self, name: str | None) -> Tiler:
        from spsr_cli.engine.batch import ModelLoader

        loader = ModelLoader(name, offline=self._offline)
        fast = fast_upscaler(loader, self._options, warm_up=self._warm_up)
        if fast is not None:
            return fast
        from spsr_cli.engine.tiling import Upscaler

        upscaler = Upscaler(loader(), self._options)
        self.usual.append((loader, upscaler))
        return upscaler


def remember_usual(pairs: list[tuple[Any, Tiler]]) -> None:
    """Write the card (:func:`remember`) of every (:class:`~spsr_cli.engine.batch.ModelLoader`, upscaler)
    pair whose model the usual path loaded and whose images ran, last, in the usual OpenVINO backend:
    the next run of that file starts without torch."""
    for loader, upscaler in pairs:
        backend = upscaler.backend
        key = getattr(backend, "sha256", None) if backend.name == "openvino" else None  # the fast start's: none
        if key and loader.sha256 is not None and loader.module is not None:
            remember(loader.sha256, key, loader.module.config)


__all__ = [
    "AutoLoader",
    "CachedOpenVINOUpscaler",
    "TileFacts",
    "fast_choice",
    "fast_upscaler",
    "remember",
    "remember_usual",
]
