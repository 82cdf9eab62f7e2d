"""Initialise SPSR's SR branch from a pretrained ESRGAN/Real-ESRGAN RRDB network.

The paper initialises the SR branch with a PSNR-oriented RRDB model. An RRDBNet
maps onto SPSRNet's ``conv_first``, ``trunk.*``, ``trunk_conv``,
``upsampler.{j}.conv`` and ``hr_conv0``; its final 64->3 conv (``conv_last``) has
no counterpart (SPSR's ``hr_conv1`` is 64->64), and the gradient branch, the
fusion block and ``hr_conv1`` stay randomly initialised.

Supported layouts (optionally under ``params_ema``/``params``/``state_dict`` and
with ``module.`` prefixes):

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
from typing import Callable, Mapping

import torch

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.checkpoint import unwrap_state_dict
from spsr_cli.model.spsr import SPSRNet

_PARAM = r"(weight|bias)"
_MAX_LISTED = 12

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], "str | None"]]


def _upsample_count(keys: list[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.fullmatch(k))})


def _esrgan_rules(keys: list[str]) -> list[Rule]:
    """Original ESRGAN ``model.N`` layout; N positions depend on the number of x2 stages."""
    nb = _upsample_count(keys, rf"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.{_PARAM}")
    top = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    ups = max(len(top) - 3, 0)  # model.0, HR conv, last conv + one per x2 stage
    names = {0: "conv_first", 3 * ups + 2: "hr_conv0", 3 * ups + 4: None}
    names.update({3 * u + 3: f"upsampler.{u}.conv" for u in range(ups)})

    def top_level(m: re.Match[str]) -> str | None:
        index = int(m.group(1))
        if index not in names:
            return "?"
        name = names[index]
        return None if name is None else f"{name}.{m.group(2)}"

    return [
        (re.compile(rf"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.{_PARAM}"),
         lambda m: f"trunk.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (re.compile(rf"model\.1\.sub\.{nb}\.{_PARAM}"), lambda m: f"trunk_conv.{m[1]}"),
        (re.compile(rf"model\.(\d+)\.{_PARAM}"), top_level),
    ]


def _named_rules(block: str, rdb: str, body: str, up: str, hr: str) -> list[Rule]:
    return [
        (re.compile(rf"conv_first\.{_PARAM}"), lambda m: f"conv_first.{m[1]}"),
        (re.compile(rf"{block}\.(\d+)\.{rdb}([123])\.conv([1-5])\.{_PARAM}"),
         lambda m: f"trunk.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (re.compile(rf"{body}\.{_PARAM}"), lambda m: f"trunk_conv.{m[1]}"),
        (re.compile(rf"{up}([1-9])\.{_PARAM}"), lambda m: f"upsampler.{int(m[1]) - 1}.conv.{m[2]}"),
        (re.compile(rf"{hr}\.{_PARAM}"), lambda m: f"hr_conv0.{m[1]}"),
        (re.compile(rf"conv_last\.{_PARAM}"), lambda m: None),
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


def _map_rrdb(state_dict: object) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(canonical SPSR trunk tensors, source keys deliberately ignored)."""
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
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in sd.items():
        target = _apply(rules, key)
        if target is None:
            ignored.append(key)
        elif target == "?":
            unknown.append(key)
        else:
            mapped[target] = value
    if unknown:
        raise CheckpointMismatchError(f"RRDBNet state dict has keys this converter cannot place: {_listing(unknown)}")
    return mapped, ignored


def _apply(rules: list[Rule], key: str) -> str | None:
    for pattern, rename in rules:
        match = pattern.fullmatch(key)
        if match:
            return rename(match)
    return "?"


def rrdb_to_spsr_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ESRGAN/BasicSR RRDBNet state dict to SPSRNet's canonical trunk keys.

    Returns ``conv_first``, ``trunk.{i}.rdb{k}.conv{j}``, ``trunk_conv``,
    ``upsampler.{u}.conv`` and ``hr_conv0`` weights/biases (tensors unchanged);
    ``conv_last`` is dropped. Raises :class:`CheckpointMismatchError` for an
    unknown layout or keys that cannot be placed.
    """
    return _map_rrdb(state_dict)[0]


@dataclass
class InitReport:
    """What :func:`init_sr_branch_from_rrdb` did, by SPSRNet key (``ignored``: source keys)."""

    loaded: list[str] = field(default_factory=list)
    random: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} tensors loaded from the RRDB network, {len(self.random)} left random "
            f"(gradient branch, fusion, hr_conv1), ignored: {', '.join(self.ignored) or 'nothing'}"
        )


def init_sr_branch_from_rrdb(model: SPSRNet, state_dict: object) -> InitReport:
    """Copy an RRDBNet's weights into ``model``'s SR branch (in place).

    Every SR-trunk tensor of the model (``conv_first``, ``trunk``, ``trunk_conv``,
    ``upsampler``, ``hr_conv0``) must be present with the same shape; otherwise
    :class:`CheckpointMismatchError` lists every problem and nothing is copied.
    Tensors are cast to each parameter's dtype.
    """
    mapped, ignored = _map_rrdb(state_dict)
    own = model.state_dict()
    trunk_prefixes = ("conv_first.", "trunk.", "trunk_conv.", "upsampler.", "hr_conv0.")
    wanted = [k for k in own if k.startswith(trunk_prefixes)]
    missing = [k for k in wanted if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        problems = [
            f"{title}: {_listing(items)}"
            for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (rrdb != spsr)", shapes))
            if items
        ]
        raise CheckpointMismatchError(
            f"the RRDB network does not fit SPSRNet({model.config}); nothing was copied. "
            + "; ".join(problems)
            + ". Build SPSRNet with the RRDB's nf/nb/gc/scale (ESRGAN/Real-ESRGAN x4: nf=64, nb=23, gc=32, scale=4)."
        )
    with torch.no_grad():
        for key in wanted:
            own[key].copy_(mapped[key].to(own[key].dtype))
    return InitReport(loaded=wanted, random=[k for k in own if k not in mapped], ignored=ignored)
