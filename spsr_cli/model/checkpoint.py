"""Canonical state dicts for :class:`SPSRNet`, and strict conversion of published layouts.

A checkpoint may come as
- the canonical layout (what ``SPSRNet.state_dict()`` gives and what we write), or
- the published ``spsr.pth`` layout (``model.0``, ``model.1.sub.N.RDBk.convj.0``,
  ``b_block_i``, ``f_block``, ...), which also stores ``HR_conv0_new.0`` as a copy of
  ``model.8`` and the two fixed gradient kernels ``get_g_nopadding.weight_{h,v}``;
optionally wrapped in ``params_ema`` / ``params`` / ``state_dict`` and with ``module.``
prefixes (DataParallel). :func:`canonicalize_state_dict` turns any of them into the
canonical layout; :func:`load_strict` refuses anything that does not match exactly.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.gradient import KERNEL_H, KERNEL_V
from spsr_cli.model.spsr import SPSRConfig, SPSRNet

StateDict = dict[str, torch.Tensor]

WRAPPER_KEYS = ("params_ema", "params", "state_dict")
_MAX_LISTED = 12


def unwrap_state_dict(obj: object) -> StateDict:
    """Strip ``params_ema``/``params``/``state_dict`` wrappers and ``module.`` prefixes."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return unwrap_state_dict(inner)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointMismatchError(
            "the checkpoint holds no state dict (expected a mapping of tensor names to tensors, "
            f"possibly under one of {list(WRAPPER_KEYS)}); got {type(obj).__name__}"
        )
    out: StateDict = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointMismatchError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        name = str(key)
        while name.startswith("module."):
            name = name[len("module.") :]
        out[name] = value
    return out


def is_published_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return "model.0.weight" in sd and any(k.startswith("b_fea_conv.") for k in sd)


def _count_indices(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := regex.match(k))}
    return max(found) + 1 if found else 0


def infer_config(sd: Mapping[str, torch.Tensor]) -> SPSRConfig:
    """Read the architecture from a canonical or published state dict's shapes."""
    try:
        if is_published_layout(sd):
            first = sd["model.0.weight"]
            nb = _count_indices(sd, r"model\.1\.sub\.(\d+)\.RDB1\.")
            gc = sd["model.1.sub.0.RDB1.conv1.0.weight"].shape[0]
            ups = sum(1 for k in sd if re.fullmatch(r"model\.(\d+)\.weight", k)) - 2  # minus model.0, HR conv0
            out_channels = sd["f_HR_conv1.0.weight"].shape[0]
        else:
            first = sd["conv_first.weight"]
            nb = _count_indices(sd, r"trunk\.(\d+)\.")
            gc = sd["trunk.0.rdb1.conv1.weight"].shape[0]
            ups = _count_indices(sd, r"upsampler\.(\d+)\.")
            out_channels = sd["fusion.out.weight"].shape[0]
    except KeyError as missing:
        raise CheckpointMismatchError(
            f"not an SPSR generator checkpoint: key {missing} is missing "
            "(expected the published spsr.pth layout or spsr-cli's own safetensors layout)"
        ) from None
    return SPSRConfig(
        in_channels=int(first.shape[1]), out_channels=int(out_channels), nf=int(first.shape[0]),
        nb=nb, gc=int(gc), scale=2 ** max(ups, 0),
    )


def _published_rules(config: SPSRConfig) -> list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]:
    nb, nup = config.nb, config.num_upsamples
    rdb = r"RDB([123])\.conv([1-5])\.0\.(weight|bias)"

    def fixed(name: str) -> Callable[[re.Match[str]], str]:
        return lambda m: f"{name}.{m.group(1)}"

    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"model\.0\.(weight|bias)", fixed("conv_first")),
        (rf"model\.1\.sub\.(\d+)\.{rdb}", lambda m: f"trunk.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (rf"model\.1\.sub\.{nb}\.(weight|bias)", fixed("trunk_conv")),
        (rf"model\.{3 * nup + 2}\.(weight|bias)", fixed("hr_conv0")),
        (r"HR_conv1_new\.0\.(weight|bias)", fixed("hr_conv1")),
        (r"b_fea_conv\.0\.(weight|bias)", fixed("branch.conv_first")),
        (rf"b_block_([1-4])\.{rdb}", lambda m: f"branch.blocks.{int(m[1]) - 1}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (r"b_concat_([1-4])\.0\.(weight|bias)", lambda m: f"branch.concats.{int(m[1]) - 1}.{m[2]}"),
        (r"b_LR_conv\.0\.(weight|bias)", fixed("branch.lr_conv")),
        (rf"b_module\.{3 * nup}\.(weight|bias)", fixed("branch.hr_conv0")),
        (rf"b_module\.{3 * nup + 2}\.(weight|bias)", fixed("branch.hr_conv1")),
        (r"conv_w\.0\.(weight|bias)", fixed("branch.out")),
        (rf"f_block\.{rdb}", lambda m: f"fusion.block.rdb{m[1]}.conv{m[2]}.{m[3]}"),
        (r"f_concat\.0\.(weight|bias)", fixed("fusion.concat")),
        (r"f_HR_conv0\.0\.(weight|bias)", fixed("fusion.hr_conv0")),
        (r"f_HR_conv1\.0\.(weight|bias)", fixed("fusion.out")),
    ]
    for j in range(nup):
        rules.append((rf"model\.{3 * j + 3}\.(weight|bias)", fixed(f"upsampler.{j}.conv")))
        rules.append((rf"b_module\.{3 * j + 1}\.(weight|bias)", fixed(f"branch.upsampler.{j}.conv")))
    return [(re.compile(p), f) for p, f in rules]


def _check_published_extras(sd: Mapping[str, torch.Tensor], config: SPSRConfig) -> list[str]:
    """Validate the duplicated and constant tensors of the published layout; return their keys."""
    extras = []
    hr0 = f"model.{3 * config.num_upsamples + 2}"
    for suffix in ("weight", "bias"):
        alias = f"HR_conv0_new.0.{suffix}"
        if alias in sd:
            extras.append(alias)
            original = sd.get(f"{hr0}.{suffix}")
            if original is None or original.shape != sd[alias].shape or not torch.equal(original, sd[alias]):
                raise CheckpointMismatchError(
                    f"{alias} must be an exact copy of {hr0}.{suffix} in the published layout, but it differs; "
                    "the checkpoint is inconsistent (re-export it from the training code)"
                )
    for key, kernel in (("get_g_nopadding.weight_h", KERNEL_H), ("get_g_nopadding.weight_v", KERNEL_V)):
        if key in sd:
            extras.append(key)
            expected = torch.tensor(kernel, dtype=torch.float32).view(1, 1, 3, 3)
            if sd[key].shape != expected.shape or not torch.equal(sd[key].float(), expected):
                raise CheckpointMismatchError(
                    f"{key} must be the fixed kernel {kernel}; this checkpoint has other values, "
                    "so it is not an SPSR generator"
                )
    return extras


def canonicalize_state_dict(obj: object) -> tuple[StateDict, SPSRConfig]:
    """Any supported checkpoint object -> (canonical state dict, inferred config).

    Keys that the published layout cannot explain are kept under their own names,
    so :func:`load_strict` lists them as unexpected.
    """
    sd = unwrap_state_dict(obj)
    config = infer_config(sd)
    if not is_published_layout(sd):
        return dict(sd), config
    extras = set(_check_published_extras(sd, config))
    rules = _published_rules(config)
    out: StateDict = {}
    for key, value in sd.items():
        if key in extras:
            continue
        for pattern, rename in rules:
            match = pattern.fullmatch(key)
            if match:
                out[rename(match)] = value
                break
        else:
            out[key] = value
    return out, config


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}): {shown}{more}"


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointMismatchError` listing every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        lines = ["the checkpoint does not match the SPSR architecture; nothing was loaded:"]
        if missing:
            lines.append(_listing("missing keys", missing))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        if shapes:
            lines.append(_listing("shape mismatches (checkpoint != model)", shapes))
        lines.append("Check that the file is an SPSR generator and that its stored config matches its tensors.")
        raise CheckpointMismatchError("\n".join(lines))


def build_generator(sd: Mapping[str, torch.Tensor], config: SPSRConfig) -> SPSRNet:
    """Build an :class:`SPSRNet` for ``config`` and load ``sd`` (canonical) strictly, in float32."""
    model = SPSRNet(config=config)
    check_state_dict(model, sd)
    model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
    return model
