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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiling import Upscaler
from spsr_cli.errors import UsageError
from spsr_cli.io.jpeg_quality import estimate_jpeg_quality
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

#: Loads a model by registry name or path (None: the default model).
Loader = Callable[[str | None], Generator]


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

    The default model (or the one model) is loaded at once: its scale names the outputs.
    Under ``auto`` another model of a different scale raises :class:`UsageError`.
    """

    def __init__(
        self, model: str | None, options: InferenceOptions, *, load: Loader, default_name: str | None = None
    ) -> None:
        self.auto = model == AUTO
        self._options = options
        self._load = load
        self._default_name = default_name
        self._hint_jpeg = model is None or (model == default_name and default_name is not None)
        self._hinted = False
        first = None if self.auto else model
        self._upscalers: dict[str | None, Upscaler] = {first: Upscaler(load(first), options)}
        self.scale = self._upscalers[first].scale

    @classmethod
    def of_module(cls, module: Generator, options: InferenceOptions, *, hint_jpeg: bool = False) -> ModelChoice:
        """One already loaded module for every image; ``hint_jpeg``: it is the default model, so a
        low-quality JPEG logs the hint that ``--model auto`` exists."""
        choice = cls("<module>", options, load=lambda _: module)
        choice._hint_jpeg = hint_jpeg
        return choice

    @property
    def first(self) -> Upscaler:
        """The upscaler of the one model (or, under ``auto``, of the default model)."""
        return next(iter(self._upscalers.values()))

    def _upscaler(self, model: str | None) -> Upscaler:
        if model not in self._upscalers:
            upscaler = Upscaler(self._load(model), self._options)
            if upscaler.scale != self.scale:
                raise UsageError(
                    f"--model auto: {model} is x{upscaler.scale} but the default model is x{self.scale}; "
                    "pass one --model instead"
                )
            self._upscalers[model] = upscaler
        return self._upscalers[model]

    def upscaler_for(self, path: Path) -> Upscaler:
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
        return self._upscaler(choice.model)


__all__ = ["AUTO", "Choice", "JPEG_MODEL", "JPEG_QUALITY_THRESHOLD", "ModelChoice", "choose_for_file"]
