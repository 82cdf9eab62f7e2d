"""Which model each image goes to: one model for all, or ``--model auto`` from what each file says.

Under ``--model auto`` a JPEG whose quantisation tables estimate a quality below
:data:`JPEG_QUALITY_THRESHOLD` (:func:`spsr_cli.io.jpeg_quality.estimate_jpeg_quality`) goes to
:data:`JPEG_MODEL`; everything else goes to the registry's default model. The log names the
model each image got and why. With one model for all, a low-quality JPEG given to the default
model logs one hint (per run) that ``--model auto`` exists.

Each model is loaded, and its :class:`~spsr_cli.engine.tiling.Upscaler` built, once per run,
on first use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiles import Tiler
from spsr_cli.errors import UsageError
from spsr_cli.io.jpeg_quality import estimate_jpeg_quality

if TYPE_CHECKING:  # torch is imported when a module is wrapped in an Upscaler
    from spsr_cli.model.architectures import Generator

log = logging.getLogger(__name__)

#: ``--model`` value that picks a model per image.
AUTO = "auto"
#: The registry model ``--model auto`` gives JPEGs of low estimated quality.
JPEG_MODEL = "realsr-df2k-jpeg"
#: JPEGs whose estimated quality is below this go to :data:`JPEG_MODEL` under ``--model auto``.
#: Measured (README, "Which model for which photo"): on Set14 with the LR saved as JPEG
#: (``spsr eval --degradation jpeg:Q``, 4:2:0), the JPEG model has the lower LPIPS up to quality 95
#: (0.2258 vs spsr-x4's 0.2349) and spsr-x4 from quality 98 on (0.1997 vs 0.2256); linear
#: interpolation puts the crossing at 95.8, so 96 and above go to the default model.
JPEG_QUALITY_THRESHOLD = 96

#: Loads a model by registry name or path (None: the default model): its module, or an upscaler ready to
#: run (a :class:`~spsr_cli.engine.tiles.Tiler`, such as :mod:`spsr_cli.engine.fast_start`'s).
Loader = Callable[[Union[str, None]], Union["Generator", Tiler]]


@dataclass(frozen=True)
class Choice:
    """The model an image goes to (a registry name, a path, or None for the default) and why."""

    model: str | None
    reason: str


def choose_for_file(path: Path, *, threshold: int = JPEG_QUALITY_THRESHOLD) -> Choice:
    """``--model auto``'s choice for the image file ``path`` (only its header is read)."""
    quality = estimate_jpeg_quality(path)
    if quality is None:
        return Choice(None, "not a JPEG")
    if quality < threshold:
        return Choice(JPEG_MODEL, f"JPEG of estimated quality {quality} < {threshold}")
    return Choice(None, f"JPEG of estimated quality {quality} >= {threshold}")


class ModelChoice:
    """Hands each image the upscaler of its model.

    Args:
        model: a registry name or path, None for the default model, or :data:`AUTO`.
        options: inference options for every model.
        load: loads a model by name (:func:`spsr_cli.weights.loader.load_generator`).
        default_name: the registry's default model (named in the log; None if there is none).
        warm_up: run one small tile through each model as it is loaded
            (:func:`spsr_cli.engine.records.warm_up`), so images are timed without one-off costs.

    The default model (or the one model) is loaded at once: its scale names the outputs.
    Under ``auto`` another model of a different scale raises :class:`UsageError`.
    ``one_off``: per model (as :meth:`name_of` names it), ``load_seconds`` and ``warm_up_seconds``.
    ``last``: under ``auto``, the latest image's choice (``model``, ``reason``); None otherwise.
    ``load``: the loader given (``run_jobs`` asks an :class:`~spsr_cli.engine.fast_start.AutoLoader`
    which models it built as usual, to leave their cards).
    """

    def __init__(
        self,
        model: str | None,
        options: InferenceOptions,
        *,
        load: Loader,
        default_name: str | None = None,
        warm_up: bool = False,
    ) -> None:
        self.auto = model == AUTO
        self._options = options
        self.load = load
        self._default_name = default_name
        self._warm_up = warm_up
        self._hint_jpeg = model is None or (model == default_name and default_name is not None)
        self._hinted = False
        self.one_off: dict[str | None, dict[str, float | None]] = {}
        self.last: dict[str, str | None] | None = None
        first = None if self.auto else model
        self._upscalers: dict[str | None, Tiler] = {first: self._build(first)}
        self.scale = self._upscalers[first].scale

    def _build(self, model: str | None) -> Tiler:
        """Load ``model`` and build its upscaler, recording the one-off seconds this takes."""
        started = time.perf_counter()
        loaded = self.load(model)
        if isinstance(loaded, Tiler):
            upscaler = loaded
        else:
            from spsr_cli.engine.tiling import Upscaler

            upscaler = Upscaler(loaded, self._options)
        loaded = time.perf_counter() - started
        warm = None
        if self._warm_up:
            from spsr_cli.engine.records import warm_up

            warm = warm_up(upscaler)
        self.one_off[self.name_of(model)] = {"load_seconds": loaded, "warm_up_seconds": warm}
        return upscaler

    def name_of(self, model: str | None) -> str | None:
        """The name a model is recorded under: None (the default model) is the default's registry name."""
        return self._default_name if model is None else model

    @classmethod
    def of_module(
        cls, module: Generator, options: InferenceOptions, *, hint_jpeg: bool = False, warm_up: bool = False
    ) -> ModelChoice:
        """One already loaded module for every image; ``hint_jpeg``: it is the default model, so a
        low-quality JPEG logs the hint that ``--model auto`` exists."""
        choice = cls("<module>", options, load=lambda _: module, warm_up=warm_up)
        choice._hint_jpeg = hint_jpeg
        return choice

    @property
    def first(self) -> Tiler:
        """The upscaler of the one model (or, under ``auto``, of the default model)."""
        return next(iter(self._upscalers.values()))

    def _upscaler(self, model: str | None) -> Tiler:
        if model not in self._upscalers:
            upscaler = self._build(model)
            if upscaler.scale != self.scale:
                raise UsageError(
                    f"--model auto: {model} is x{upscaler.scale} but the default model is x{self.scale}; "
                    "pass one --model instead"
                )
            self._upscalers[model] = upscaler
        return self._upscalers[model]

    def upscaler_for(self, path: Path) -> Tiler:
        """The upscaler for the image file ``path``; logs the choice under ``auto``."""
        if not self.auto:
            (model,) = self._upscalers
            if self._hint_jpeg and not self._hinted:
                choice = choose_for_file(path)
                if choice.model is not None:
                    self._hinted = True
                    log.info(
                        "%s is a %s: `--model auto` would give such JPEGs %s, made for them",
                        path.name,
                        choice.reason,
                        JPEG_MODEL,
                    )
            return self._upscalers[model]
        choice = choose_for_file(path)
        log.info("%s: model %s (%s)", path.name, choice.model or self._default_name or "default", choice.reason)
        upscaler = self._upscaler(choice.model)
        self.last = {"model": self.name_of(choice.model), "reason": choice.reason}
        return upscaler


__all__ = ["AUTO", "Choice", "JPEG_MODEL", "JPEG_QUALITY_THRESHOLD", "ModelChoice", "choose_for_file"]
