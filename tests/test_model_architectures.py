"""The architecture table: every architecture by name, its config from JSON, the image out of its forward."""

from __future__ import annotations

import pytest
import torch

from spsr_cli.model.architectures import (
    ARCHITECTURES,
    architecture_of,
    build,
    config_from_dict,
    get_architecture,
    macs_per_output_megapixel,
)
from spsr_cli.model.dat import DAT, DATConfig
from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

TINY_DAT = DATConfig(nf=16, depth=2, heads=2, ffn_channels=16, window_short=2, window_long=4)


@pytest.mark.parametrize(
    "config",
    [SPSRConfig(nf=4, nb=1, gc=2), RRDBNetConfig(nf=4, nb=1, gc=2), SRVGGConfig(nf=4, num_conv=1), TINY_DAT],
    ids=lambda c: c.architecture,
)
def test_each_architecture_builds_from_its_config_and_yields_an_image(config) -> None:
    arch = get_architecture(config.architecture)
    model = build(config).eval()
    assert architecture_of(model) is arch and architecture_of(config) is arch
    assert config_from_dict(arch.name, config.to_dict()) == config
    with torch.no_grad():
        image = arch.image(model(torch.rand(1, 3, 6, 5)))
    assert image.shape == (1, 3, 24, 20)
    for number in (config.receptive_radius, config.work_channels, config.tile_align):
        assert isinstance(number, int) and number > 0
    assert config.macs_per_input_pixel > 0


def test_names_and_types() -> None:
    assert set(ARCHITECTURES) == {"spsr", "rrdbnet", "srvgg", "dat"}
    assert isinstance(build(SPSRConfig(nf=4, nb=1, gc=2)), SPSRNet)
    assert isinstance(build(RRDBNetConfig(nf=4, nb=1, gc=2)), RRDBNet)
    assert isinstance(build(SRVGGConfig(nf=4, num_conv=1)), SRVGGNetCompact)
    assert isinstance(build(TINY_DAT), DAT)
    with pytest.raises(ValueError, match="unknown architecture 'swinir'; this version knows dat, rrdbnet, spsr, srvgg"):
        get_architecture("swinir")
    with pytest.raises(ValueError, match="unknown SPSRConfig fields"):
        config_from_dict("spsr", {"unshuffle": 2})


def test_plain_rrdbnet_costs_about_a_third_of_spsr() -> None:
    ratio = macs_per_output_megapixel(RRDBNetConfig()) / macs_per_output_megapixel(SPSRConfig())
    assert 0.3 < ratio < 0.4


def test_the_compact_model_costs_a_fifteenth_of_rrdbnet_and_a_fortieth_of_spsr() -> None:
    compact = macs_per_output_megapixel(SRVGGConfig())
    assert 14 < macs_per_output_megapixel(RRDBNetConfig()) / compact < 15.5
    assert 42 < macs_per_output_megapixel(SPSRConfig()) / compact < 44
