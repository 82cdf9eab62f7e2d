"""Every generator architecture this tool runs, as data: name -> config type, module, output image.

The registry, the weights files and the engine name an architecture (``spsr``, ``rrdbnet``,
``srvgg``, ``dat``) and
look it up here; nothing else branches on architecture names. What the engine needs of an
architecture is on its config (:class:`GeneratorConfig`): the scale, the receptive radius
and the default context of a tile (tile overlap), the grid tiles start on, the activation
memory per output pixel (tile size) and the compute per input pixel (cost per megapixel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Union

import torch
from torch import nn

from spsr_cli.model.dat import DAT, DATConfig
from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

#: A generator module of any architecture.
Generator = Union[SPSRNet, RRDBNet, SRVGGNetCompact, DAT]
AnyConfig = Union[SPSRConfig, RRDBNetConfig, SRVGGConfig, DATConfig]


class GeneratorConfig(Protocol):
    """What every architecture's config offers (frozen dataclasses, stored with the weights)."""

    architecture: str
    scale: int
    in_channels: int
    out_channels: int
    nf: int

    @property
    def receptive_radius(self) -> int:
        """Input pixels of context that can reach an output pixel, per side (an upper bound)."""

    @property
    def work_channels(self) -> int:
        """Activation elements per output pixel at the peak of one forward pass."""

    @property
    def tile_context(self) -> int:
        """Input pixels of context each tile gets unless ``--tile-overlap`` says otherwise."""

    @property
    def tile_align(self) -> int:
        """Tiles start on multiples of this many input pixels (a grid the network cuts its input
        into, such as attention windows; 1: none)."""

    @property
    def macs_per_input_pixel(self) -> float:
        """Multiply-accumulates of one forward pass per input pixel."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Architecture:
    """One architecture.

    ``image``: the module's forward output -> the N x C x sH x sW super-resolved image
    (SPSR returns :class:`~spsr_cli.model.spsr.SPSROutput`, the others the image itself).
    """

    name: str
    config_type: Callable[..., Any]
    build: Callable[[Any], nn.Module]
    image: Callable[[Any], torch.Tensor]
    summary: str

    def config_from_dict(self, data: Mapping[str, Any]) -> AnyConfig:
        return self.config_type.from_dict(data)  # type: ignore[attr-defined, no-any-return]


ARCHITECTURES: dict[str, Architecture] = {
    "spsr": Architecture(
        "spsr",
        SPSRConfig,
        lambda config: SPSRNet(config=config),
        lambda out: out.sr,
        "SPSR: RRDB trunk + gradient branch + fusion (structure-preserving SR)",
    ),
    "rrdbnet": Architecture(
        "rrdbnet",
        RRDBNetConfig,
        lambda config: RRDBNet(config=config),
        lambda out: out,
        "RRDBNet: ESRGAN / Real-ESRGAN / RealSR / BasicSR generator",
    ),
    "srvgg": Architecture(
        "srvgg",
        SRVGGConfig,
        lambda config: SRVGGNetCompact(config=config),
        lambda out: out,
        "SRVGGNetCompact: Real-ESRGAN's compact convolution stack (realesr-general-x4v3)",
    ),
    "dat": Architecture(
        "dat",
        DATConfig,
        lambda config: DAT(config=config),
        lambda out: out,
        "DAT: dual aggregation transformer (spatial-window and channel attention; DAT-light)",
    ),
}


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name``; ValueError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; this version knows {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def architecture_of(model_or_config: nn.Module | GeneratorConfig) -> Architecture:
    """The architecture of a generator module (its ``config``) or of a config."""
    config = getattr(model_or_config, "config", model_or_config)
    return get_architecture(str(getattr(config, "architecture", "")))


def config_from_dict(architecture: str, data: Mapping[str, Any]) -> AnyConfig:
    """The typed config of ``architecture`` from its JSON form; ValueError when it does not fit."""
    return get_architecture(architecture).config_from_dict(data)


def build(config: GeneratorConfig) -> nn.Module:
    """A freshly initialised generator for ``config`` (float32, train mode)."""
    return architecture_of(config).build(config)


def macs_per_output_megapixel(config: GeneratorConfig) -> float:
    """Multiply-accumulates per megapixel of output (the cost column of ``spsr weights list``)."""
    return config.macs_per_input_pixel / config.scale**2 * 1e6


__all__ = [
    "ARCHITECTURES",
    "AnyConfig",
    "Architecture",
    "Generator",
    "GeneratorConfig",
    "architecture_of",
    "build",
    "config_from_dict",
    "get_architecture",
    "macs_per_output_megapixel",
]
