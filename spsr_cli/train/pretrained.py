"""Start SPSR from a pretrained ESRGAN/Real-ESRGAN RRDBNet: an exact warm start.

:func:`embed_rrdbnet` puts a whole RRDBNet inside :class:`SPSRNet` so that, before any
training, the SPSR generator's ``sr`` output *equals* the RRDBNet's output:

* ``conv_first``, the trunk, ``trunk_conv`` and the upsamplers take the RRDBNet's layers;
* the SR branch's ``hr_conv0``/``hr_conv1`` become identity (Dirac) convolutions, the
  first with a positive bias ``shift`` and the second with ``-shift``, so the
  LeakyReLU between them only sees positive values and the features pass unchanged
  (a Dirac convolution reads only the centre pixel, so zero padding cannot leak the shift);
* the fusion RRDB's three ``conv5`` layers start at zero, so the block returns 1.2x its
  input; ``fusion.concat`` keeps only the SR half, scaled by 1/1.2;
* ``fusion.hr_conv0`` and ``fusion.out`` take the RRDBNet's ``conv_hr`` and ``conv_last``.

The gradient branch keeps its fresh initialisation and is trained by its own loss; it
starts to steer the output as the fusion weights move away from zero.

Accepted layouts (optionally under ``params_ema``/``params``/``state_dict`` and with
``module.`` prefixes), all normalised to BasicSR names by :func:`rrdb_to_basicsr`:

* original ESRGAN: ``model.0``, ``model.1.sub.{i}.RDB{k}.conv{j}.0``,
  ``model.1.sub.{nb}``, ``model.{3u+3}`` (upsampling), ``model.{3U+2}`` (HR conv),
  ``model.{3U+4}`` (last conv), U the number of x2 stages;
* BasicSR / Real-ESRGAN: ``conv_first``, ``body.{i}.rdb{k}.conv{j}``, ``conv_body``,
  ``conv_up{u}``, ``conv_hr``, ``conv_last``;
* ESRGAN's later code: ``conv_first``, ``RRDB_trunk.{i}.RDB{k}.conv{j}``,
  ``trunk_conv``, ``upconv{u}``, ``HRconv``, ``conv_last``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.blocks import RESIDUAL_SCALE
from spsr_cli.model.checkpoint import unwrap_state_dict
from spsr_cli.model.spsr import SPSRNet

_PARAM = r"(weight|bias)"
_MAX_LISTED = 12

#: Bias that keeps the SR features positive between the two Dirac convolutions. The
#: upsampler's LeakyReLU output of the RealSR DF2K network stays above -1.3 on training
#: photographs and above -2.2 on uniform noise (measured), so 4 leaves a margin; a small
#: shift keeps bfloat16 close (Set14 crop: bf16 vs fp32 42.8 dB with 4, 34.2 dB with 16).
DEFAULT_SHIFT = 4.0

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _count(keys: list[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.fullmatch(k))})


def _esrgan_rules(keys: list[str]) -> list[Rule]:
    """Original ESRGAN ``model.N`` layout; N positions depend on the number of x2 stages."""
    nb = _count(keys, rf"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.{_PARAM}")
    top = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    ups = max(len(top) - 3, 0)  # model.0, HR conv, last conv + one per x2 stage
    names = {0: "conv_first", 3 * ups + 2: "conv_hr", 3 * ups + 4: "conv_last"}
    names.update({3 * u + 3: f"conv_up{u + 1}" for u in range(ups)})

    def top_level(m: re.Match[str]) -> str:
        index = int(m.group(1))
        return f"{names[index]}.{m.group(2)}" if index in names else "?"

    return [
        (re.compile(rf"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.{_PARAM}"),
         lambda m: f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (re.compile(rf"model\.1\.sub\.{nb}\.{_PARAM}"), lambda m: f"conv_body.{m[1]}"),
        (re.compile(rf"model\.(\d+)\.{_PARAM}"), top_level),
    ]


def _named_rules(block: str, rdb: str, body: str, up: str, hr: str) -> list[Rule]:
    return [
        (re.compile(rf"conv_first\.{_PARAM}"), lambda m: f"conv_first.{m[1]}"),
        (re.compile(rf"{block}\.(\d+)\.{rdb}([123])\.conv([1-5])\.{_PARAM}"),
         lambda m: f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (re.compile(rf"{body}\.{_PARAM}"), lambda m: f"conv_body.{m[1]}"),
        (re.compile(rf"{up}([1-9])\.{_PARAM}"), lambda m: f"conv_up{m[1]}.{m[2]}"),
        (re.compile(rf"{hr}\.{_PARAM}"), lambda m: f"conv_hr.{m[1]}"),
        (re.compile(rf"conv_last\.{_PARAM}"), lambda m: f"conv_last.{m[1]}"),
    ]


#: (layout name, marker key, rules factory)
LAYOUTS: tuple[tuple[str, str, Callable[[list[str]], list[Rule]]], ...] = (
    ("esrgan (model.N)", "model.1.sub.0.RDB1.conv1.0.weight", _esrgan_rules),
    ("basicsr (body.N.rdbK)", "body.0.rdb1.conv1.weight",
     lambda keys: _named_rules("body", "rdb", "conv_body", "conv_up", "conv_hr")),
    ("esrgan-new (RRDB_trunk)", "RRDB_trunk.0.RDB1.conv1.weight",
     lambda keys: _named_rules("RRDB_trunk", "RDB", "trunk_conv", "upconv", "HRconv")),
)


def _listing(items: list[str]) -> str:
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def rrdb_to_basicsr(state_dict: object) -> dict[str, torch.Tensor]:
    """Normalise an ESRGAN-family RRDBNet state dict to BasicSR key names (tensors unchanged).

    Raises :class:`CheckpointMismatchError` for an unknown layout or keys that cannot be placed.
    """
    sd = unwrap_state_dict(state_dict)
    keys = list(sd)
    for _layout, marker, factory in LAYOUTS:
        if marker in sd:
            rules = factory(keys)
            break
    else:
        raise CheckpointMismatchError(
            "not an ESRGAN/Real-ESRGAN RRDBNet state dict: expected the original ESRGAN layout "
            "(model.1.sub.0.RDB1.conv1.0.weight), BasicSR's (body.0.rdb1.conv1.weight) or "
            f"RRDB_trunk.0.RDB1.conv1.weight; saw keys {_listing(keys)}"
        )
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        target = next((rename(m) for pattern, rename in rules if (m := pattern.fullmatch(key))), "?")
        if target == "?":
            unknown.append(key)
        else:
            mapped[target] = value
    if unknown:
        raise CheckpointMismatchError(f"RRDBNet state dict has keys this converter cannot place: {_listing(unknown)}")
    return mapped


def _placement(model: SPSRNet) -> dict[str, str]:
    """SPSRNet key -> BasicSR RRDBNet key for every tensor copied unchanged."""
    places = {"conv_first": "conv_first", "trunk_conv": "conv_body",
              "fusion.hr_conv0": "conv_hr", "fusion.out": "conv_last"}
    places.update({f"upsampler.{u}.conv": f"conv_up{u + 1}" for u in range(model.config.num_upsamples)})
    out = {}
    for spsr, rrdb in places.items():
        for param in ("weight", "bias"):
            out[f"{spsr}.{param}"] = f"{rrdb}.{param}"
    for key in model.state_dict():
        if key.startswith("trunk."):
            out[key] = "body." + key.removeprefix("trunk.")
    return out


@dataclass
class InitReport:
    """What :func:`embed_rrdbnet` did, by SPSRNet key.

    ``loaded``: copied from the RRDBNet; ``constructed``: set to identity/zero so the
    RRDBNet passes through exactly; ``random``: left as initialised (the gradient branch,
    the fusion RDBs' conv1-4).
    """

    loaded: list[str] = field(default_factory=list)
    constructed: list[str] = field(default_factory=list)
    random: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors copied from the RRDBNet, {len(self.constructed)} set for an exact "
                f"pass-through, {len(self.random)} left at their initialisation (gradient branch, fusion RDBs)")


def embed_rrdbnet(model: SPSRNet, state_dict: object, *, shift: float = DEFAULT_SHIFT) -> InitReport:
    """Make ``model`` (in place) compute exactly the RRDBNet ``state_dict`` in its ``sr`` output.

    See the module docstring for the construction. Every RRDBNet tensor must be present
    with the shape the model needs; otherwise :class:`CheckpointMismatchError` lists every
    problem and nothing is changed. Tensors are cast to each parameter's dtype.
    ``shift`` must exceed the most negative SR feature the model will see.
    """
    if not shift > 0:
        raise ValueError(f"shift must be positive, got {shift}")
    source = rrdb_to_basicsr(state_dict)
    own = model.state_dict()
    placement = _placement(model)
    missing = sorted(rrdb for rrdb in placement.values() if rrdb not in source)
    unexpected = sorted(set(source) - set(placement.values()))
    shapes = [
        f"{rrdb} {tuple(source[rrdb].shape)} != {key} {tuple(own[key].shape)}"
        for key, rrdb in placement.items()
        if rrdb in source and tuple(source[rrdb].shape) != tuple(own[key].shape)
    ]
    if missing or unexpected or shapes:
        problems = [
            f"{title}: {_listing(items)}"
            for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if items
        ]
        raise CheckpointMismatchError(
            f"the RRDBNet does not fit SPSRNet({model.config}); nothing was changed. " + "; ".join(problems)
            + ". Build SPSRNet with the RRDBNet's nf/nb/gc/scale (ESRGAN/Real-ESRGAN/RealSR x4: nf=64, nb=23, gc=32, scale=4)."
        )
    nf = model.config.nf
    constructed: dict[str, torch.Tensor] = {}
    dirac = nn.init.dirac_(torch.empty(nf, nf, 3, 3))
    constructed["hr_conv0.weight"] = dirac
    constructed["hr_conv0.bias"] = torch.full((nf,), float(shift))
    constructed["hr_conv1.weight"] = dirac
    constructed["hr_conv1.bias"] = torch.full((nf,), -float(shift))
    for k in (1, 2, 3):
        for param in ("weight", "bias"):
            key = f"fusion.block.rdb{k}.conv5.{param}"
            constructed[key] = torch.zeros_like(own[key])
    block_gain = (1.0 + RESIDUAL_SCALE)  # each RDB is x + 0.2 * 0 = x; the RRDB adds 0.2x
    concat = torch.zeros_like(own["fusion.concat.weight"])
    concat[:, nf:] = dirac / block_gain
    constructed["fusion.concat.weight"] = concat
    constructed["fusion.concat.bias"] = torch.zeros_like(own["fusion.concat.bias"])
    with torch.no_grad():
        for key, rrdb in placement.items():
            own[key].copy_(source[rrdb].to(own[key].dtype))
        for key, value in constructed.items():
            own[key].copy_(value.to(own[key].dtype))
    return InitReport(loaded=sorted(placement), constructed=sorted(constructed),
                      random=[k for k in own if k not in placement and k not in constructed])
