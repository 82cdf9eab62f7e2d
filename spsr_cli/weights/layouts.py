"""State-dict layouts: which published layout a checkpoint uses, renaming it to ours, strict checks.

One detection table (:data:`LAYOUTS`) and one renaming engine (:func:`rename_keys`) serve both
families of checkpoints this tool reads:

* ``spsr``: SPSR generators, renamed to the canonical :class:`SPSRNet` keys (what
  ``SPSRNet.state_dict()`` gives and what we write). Layouts: the canonical one, and the
  published ``spsr.pth`` layout (``model.0``, ``model.1.sub.N.RDBk.convj.0``, ``b_block_i``,
  ``f_block``, ...), which also stores ``HR_conv0_new.0`` as a copy of ``model.8`` and the two
  fixed gradient kernels ``get_g_nopadding.weight_{h,v}`` (checked, then dropped).
* ``rrdbnet``: ESRGAN-family RRDBNets, renamed to BasicSR's names (``conv_first``,
  ``body.{i}.rdb{k}.conv{j}``, ``conv_body``, ``conv_up{u}``, ``conv_hr``, ``conv_last``).
  Layouts: original ESRGAN (``model.0``, ``model.1.sub.{i}.RDB{k}.conv{j}.0``,
  ``model.1.sub.{nb}``, ``model.{3u+3}`` upsampling, ``model.{3U+2}`` HR conv, ``model.{3U+4}``
  last conv, U the number of x2 stages), BasicSR / Real-ESRGAN, and ESRGAN's later code
  (``RRDB_trunk.{i}.RDB{k}.conv{j}``, ``trunk_conv``, ``upconv{u}``, ``HRconv``).
* ``srvgg``: Real-ESRGAN's SRVGGNetCompact (``body.N``: convolutions at even N, activations at
  odd N), the same names in the published files and ours.
* ``dat``: DAT-light (``conv_first``, ``before_RG.1``, ``layers.{g}.blocks.{b}...``), renamed
  (``before_RG.1`` -> ``norm_in``) after its derived tensors (relative-position tables, shift
  masks, batch-norm counters) are checked against what :mod:`spsr_cli.model.dat` derives and dropped.

Any of them may be wrapped in ``params_ema`` / ``params`` / ``state_dict`` and carry
``module.`` prefixes (DataParallel): :func:`unwrap_state_dict` strips both.
:func:`normalize_generator` detects the layout of any checkpoint (one table, :data:`LAYOUTS`)
and returns its architecture, our key names and its config; :func:`canonicalize_state_dict`
(SPSR) and :func:`rrdb_to_basicsr` (RRDBNet) are the per-family entry points;
:func:`check_state_dict` / :func:`build_generator` refuse anything that does not match the
architecture exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.architectures import AnyConfig, GeneratorConfig, architecture_of
from spsr_cli.model.dat import DATConfig, relative_offsets, relative_pair_index, shift_mask
from spsr_cli.model.gradient import KERNEL_H, KERNEL_V
from spsr_cli.model.rrdbnet import RRDBNetConfig
from spsr_cli.model.spsr import SPSRConfig
from spsr_cli.model.srvgg import SRVGGConfig

StateDict = dict[str, torch.Tensor]
#: A key pattern and what a match is renamed to (None: the layout cannot place that key).
Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Optional[str]]]

WRAPPER_KEYS = ("params_ema", "params", "state_dict")
SPSR = "spsr"
RRDBNET = "rrdbnet"
SRVGG = "srvgg"
DAT = "dat"
#: What each family is called in messages.
FAMILY_NAMES = {
    SPSR: "SPSR generator",
    RRDBNET: "ESRGAN/Real-ESRGAN RRDBNet",
    SRVGG: "Real-ESRGAN SRVGGNetCompact",
    DAT: "DAT (DAT-light)",
}
_PARAM = r"(weight|bias)"
_MAX_LISTED = 12


def listing(items: list[str]) -> str:
    """The first few ``items``, comma-separated, with a count of the rest."""
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


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


# ---------------------------------------------------------------- renaming engine


def rename_keys(sd: Mapping[str, torch.Tensor], rules: list[Rule]) -> tuple[StateDict, list[str]]:
    """Rename every key by the first rule whose pattern matches it in full.

    Returns (renamed state dict, keys no rule placed), tensors unchanged.
    """
    renamed: StateDict = {}
    unplaced: list[str] = []
    for key, value in sd.items():
        target = next((rename(m) for pattern, rename in rules if (m := pattern.fullmatch(key))), None)
        if target is None:
            unplaced.append(key)
        else:
            renamed[target] = value
    return renamed, unplaced


def _compile(rules: list[tuple[str, Callable[[re.Match[str]], Optional[str]]]]) -> list[Rule]:
    return [(re.compile(pattern), rename) for pattern, rename in rules]


def _fixed(name: str) -> Callable[[re.Match[str]], str]:
    """``(weight|bias)`` as the last group -> ``name.weight`` / ``name.bias``."""
    return lambda m: f"{name}.{m.group(m.lastindex or 0)}"


def _count_indices(keys: object, pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := regex.match(k))}  # type: ignore[attr-defined]
    return max(found) + 1 if found else 0


# ---------------------------------------------------------------- SPSR layouts


def is_published_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return "model.0.weight" in sd and any(k.startswith("b_fea_conv.") for k in sd)


def infer_config(sd: Mapping[str, torch.Tensor]) -> SPSRConfig:
    """Read the architecture from a canonical or published SPSR state dict's shapes."""
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
        in_channels=int(first.shape[1]),
        out_channels=int(out_channels),
        nf=int(first.shape[0]),
        nb=nb,
        gc=int(gc),
        scale=2 ** max(ups, 0),
    )


def _published_rules(sd: Mapping[str, torch.Tensor]) -> list[Rule]:
    config = infer_config(sd)
    nb, nup = config.nb, config.num_upsamples
    rdb = r"RDB([123])\.conv([1-5])\.0\.(weight|bias)"
    rules: list[tuple[str, Callable[[re.Match[str]], Optional[str]]]] = [
        (r"model\.0\.(weight|bias)", _fixed("conv_first")),
        (rf"model\.1\.sub\.(\d+)\.{rdb}", lambda m: f"trunk.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (rf"model\.1\.sub\.{nb}\.(weight|bias)", _fixed("trunk_conv")),
        (rf"model\.{3 * nup + 2}\.(weight|bias)", _fixed("hr_conv0")),
        (r"HR_conv1_new\.0\.(weight|bias)", _fixed("hr_conv1")),
        (r"b_fea_conv\.0\.(weight|bias)", _fixed("branch.conv_first")),
        (rf"b_block_([1-4])\.{rdb}", lambda m: f"branch.blocks.{int(m[1]) - 1}.rdb{m[2]}.conv{m[3]}.{m[4]}"),
        (r"b_concat_([1-4])\.0\.(weight|bias)", lambda m: f"branch.concats.{int(m[1]) - 1}.{m[2]}"),
        (r"b_LR_conv\.0\.(weight|bias)", _fixed("branch.lr_conv")),
        (rf"b_module\.{3 * nup}\.(weight|bias)", _fixed("branch.hr_conv0")),
        (rf"b_module\.{3 * nup + 2}\.(weight|bias)", _fixed("branch.hr_conv1")),
        (r"conv_w\.0\.(weight|bias)", _fixed("branch.out")),
        (rf"f_block\.{rdb}", lambda m: f"fusion.block.rdb{m[1]}.conv{m[2]}.{m[3]}"),
        (r"f_concat\.0\.(weight|bias)", _fixed("fusion.concat")),
        (r"f_HR_conv0\.0\.(weight|bias)", _fixed("fusion.hr_conv0")),
        (r"f_HR_conv1\.0\.(weight|bias)", _fixed("fusion.out")),
    ]
    for j in range(nup):
        rules.append((rf"model\.{3 * j + 3}\.(weight|bias)", _fixed(f"upsampler.{j}.conv")))
        rules.append((rf"b_module\.{3 * j + 1}\.(weight|bias)", _fixed(f"branch.upsampler.{j}.conv")))
    return _compile(rules)


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


# ---------------------------------------------------------------- RRDBNet layouts


def _esrgan_rules(sd: Mapping[str, torch.Tensor]) -> list[Rule]:
    """Original ESRGAN ``model.N`` layout; N positions depend on the number of x2 stages."""
    keys = list(sd)
    nb = len({m.group(1) for k in keys if (m := re.fullmatch(rf"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.{_PARAM}", k))})
    top = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    ups = max(len(top) - 3, 0)  # model.0, HR conv, last conv + one per x2 stage
    names = {0: "conv_first", 3 * ups + 2: "conv_hr", 3 * ups + 4: "conv_last"}
    names.update({3 * u + 3: f"conv_up{u + 1}" for u in range(ups)})
    return _compile(
        [
            (
                rf"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.{_PARAM}",
                lambda m: f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}",
            ),
            (rf"model\.1\.sub\.{nb}\.{_PARAM}", _fixed("conv_body")),
            (rf"model\.(\d+)\.{_PARAM}", lambda m: f"{names[int(m[1])]}.{m[2]}" if int(m[1]) in names else None),
        ]
    )


def _named_rules(
    block: str, rdb: str, body: str, up: str, hr: str
) -> Callable[[Mapping[str, torch.Tensor]], list[Rule]]:
    rules = _compile(
        [
            (rf"conv_first\.{_PARAM}", _fixed("conv_first")),
            (
                rf"{block}\.(\d+)\.{rdb}([123])\.conv([1-5])\.{_PARAM}",
                lambda m: f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}",
            ),
            (rf"{body}\.{_PARAM}", _fixed("conv_body")),
            (rf"{up}([1-9])\.{_PARAM}", lambda m: f"conv_up{m[1]}.{m[2]}"),
            (rf"{hr}\.{_PARAM}", _fixed("conv_hr")),
            (rf"conv_last\.{_PARAM}", _fixed("conv_last")),
        ]
    )
    return lambda sd: rules


def infer_rrdbnet_config(sd: Mapping[str, torch.Tensor]) -> RRDBNetConfig:
    """Read an RRDBNet's architecture from a BasicSR-named state dict's shapes.

    nf, gc, nb and the number of x2 steps come from the tensors; the image channels and
    Real-ESRGAN's pixel-unshuffle from ``conv_first``'s input channels: 4x or 16x the output
    channels means the x2 or x1 layout (2x2 or 4x4 pixels folded into channels).
    """
    try:
        first, last = sd["conv_first.weight"], sd["conv_last.weight"]
        gc = int(sd["body.0.rdb1.conv1.weight"].shape[0])
    except KeyError as missing:
        raise CheckpointMismatchError(f"not an RRDBNet state dict: key {missing} is missing") from None
    nf, first_in, out = int(first.shape[0]), int(first.shape[1]), int(last.shape[0])
    nb = _count_indices(sd, r"body\.(\d+)\.")
    steps = _count_indices(sd, r"conv_up(\d+)\.") - 1  # conv_up1..conv_upK count as K + 1
    unshuffle = next((u for u in (4, 2) if first_in == out * u * u), 1)
    in_channels = first_in // (unshuffle * unshuffle)
    if steps < 1 or 2**steps % unshuffle:
        raise CheckpointMismatchError(
            f"RRDBNet with {max(steps, 0)} upsampling convolutions and conv_first taking {first_in} channels "
            "is not a layout this tool knows (x8, x4, x2 or Real-ESRGAN's x2/x1 pixel-unshuffle models)"
        )
    try:
        return RRDBNetConfig(
            in_channels=in_channels,
            out_channels=out,
            nf=nf,
            nb=nb,
            gc=gc,
            scale=2**steps // unshuffle,
            unshuffle=unshuffle,
        )
    except ValueError as err:
        raise CheckpointMismatchError(f"unsupported RRDBNet: {err}") from None


# ---------------------------------------------------------------- SRVGGNetCompact


def infer_srvgg_config(sd: Mapping[str, torch.Tensor]) -> SRVGGConfig:
    """Read an SRVGGNetCompact's architecture from its ``body.N`` tensors.

    Convolutions (4-d ``body.N.weight``) sit at even N: the first takes the image, the last
    gives ``out_channels * scale**2`` channels (the image channels are the first's input). The
    activation is PReLU when ``body.1.weight`` (one slope per channel) is there. ReLU and
    LeakyReLU carry no tensor that says which: ``relu`` is returned then, which only our own
    files reach (their stored config says which); a foreign file without slopes matches no
    layout (:func:`_is_srvgg`).
    """
    convs = sorted(
        int(m.group(1)) for k, v in sd.items() if (m := re.fullmatch(r"body\.(\d+)\.weight", k)) and v.dim() == 4
    )
    if not convs or convs[0] != 0:
        raise CheckpointMismatchError(
            "not an SRVGGNetCompact state dict: key 'body.0.weight' (a convolution) is missing"
        )
    first, last = sd["body.0.weight"], sd[f"body.{convs[-1]}.weight"]
    channels, out = int(first.shape[1]), int(last.shape[0])
    scale = math.isqrt(out // channels)
    if len(convs) < 2 or convs[-1] % 2 or scale * scale * channels != out:
        raise CheckpointMismatchError(
            f"not an SRVGGNetCompact state dict: its last convolution body.{convs[-1]} gives {out} channels, "
            f"not {channels} image channels times a square scale factor"
        )
    prelu = sd.get("body.1.weight")
    try:
        return SRVGGConfig(
            in_channels=channels,
            out_channels=channels,
            nf=int(first.shape[0]),
            num_conv=convs[-1] // 2 - 1,
            scale=scale,
            activation="prelu" if prelu is not None and prelu.dim() == 1 else "relu",
        )
    except ValueError as err:
        raise CheckpointMismatchError(f"unsupported SRVGGNetCompact: {err}") from None


def _is_srvgg(sd: Mapping[str, torch.Tensor]) -> bool:
    """Real-ESRGAN's compact layout: a convolution at ``body.0`` and PReLU slopes at ``body.1`` (every
    published compact model has them; without them the activation cannot be told from the file)."""
    first, slopes = sd.get("body.0.weight"), sd.get("body.1.weight")
    return first is not None and first.dim() == 4 and slopes is not None and slopes.dim() == 1


def _srvgg_canonical(obj: object) -> tuple[StateDict, SRVGGConfig]:
    sd = unwrap_state_dict(obj)  # the published names are ours
    return sd, infer_srvgg_config(sd)


# ---------------------------------------------------------------- DAT

#: Tensors of the published DAT files that are derived from the architecture, never loaded.
_DAT_DERIVED = re.compile(r".*\.(rpe_biases|relative_position_index|attn_mask_[01]|num_batches_tracked)")


def infer_dat_config(sd: Mapping[str, torch.Tensor]) -> DATConfig:
    """Read a DAT's architecture from a published or spsr-cli state dict's shapes.

    nf and the image channels from ``conv_first``; groups and blocks per group by counting;
    heads from the channel blocks' temperatures (or twice a spatial branch's position-bias
    heads); the feed-forward width from ``ffn.fc1``; the window shape from the published
    relative-position index (N = short * long tokens) and offsets table ((2 short - 1) (2 long - 1)
    offsets), else DAT's 8 x 32; the residual convs from ``layers.0.conv``; the scale from the
    upsampler's channels.
    """
    if "conv_before_upsample.0.weight" in sd or "conv_last.weight" in sd:
        raise CheckpointMismatchError(
            "this DAT uses the pixel-shuffle upsampler (DAT, DAT-S, DAT-2); this version runs DAT-light "
            "(pixel-shuffle-direct upsampler) only"
        )
    try:
        first = sd["conv_first.weight"]
        nf, channels = int(first.shape[0]), int(first.shape[1])
        groups = _count_indices(sd, r"layers\.(\d+)\.")
        depth = _count_indices(sd, r"layers\.0\.blocks\.(\d+)\.")
        temperature = sd.get("layers.0.blocks.1.attn.temperature")
        heads = (
            int(temperature.shape[0])
            if temperature is not None
            else 2 * int(sd["layers.0.blocks.0.attn.attns.0.pos.pos3.2.weight"].shape[0])
        )
        ffn = int(sd["layers.0.blocks.0.ffn.fc1.weight"].shape[0])
        up = int(sd["upsample.0.weight"].shape[0])
    except KeyError as missing:
        raise CheckpointMismatchError(f"not a DAT-light state dict: key {missing} is missing") from None
    short, long = 8, 32
    index = sd.get("layers.0.blocks.0.attn.attns.0.relative_position_index")
    offsets = sd.get("layers.0.blocks.0.attn.attns.0.rpe_biases")
    if index is not None and offsets is not None:
        tokens, pairs = int(index.shape[0]), int(offsets.shape[0])
        total = (4 * tokens + 1 - pairs) // 2  # (2a - 1)(2b - 1) = 4ab - 2(a + b) + 1
        root = math.isqrt(max(total * total - 4 * tokens, 0))
        short, long = (total - root) // 2, (total + root) // 2
        if short < 1 or short * long != tokens:
            raise CheckpointMismatchError(
                f"DAT window tables of {tokens} tokens and {pairs} offsets fit no window shape"
            )
    scale = math.isqrt(up // channels)
    if scale * scale * channels != up:
        raise CheckpointMismatchError(
            f"DAT upsampler gives {up} channels, not {channels} image channels times a square scale factor"
        )
    try:
        return DATConfig(
            in_channels=channels,
            out_channels=channels,
            nf=nf,
            groups=groups,
            depth=depth,
            heads=heads,
            ffn_channels=ffn,
            window_short=short,
            window_long=long,
            residual_convs=3 if "layers.0.conv.0.weight" in sd else 1,
            scale=scale,
        )
    except ValueError as err:
        raise CheckpointMismatchError(f"unsupported DAT: {err}") from None


def _check_dat_derived(sd: Mapping[str, torch.Tensor], config: DATConfig) -> list[str]:
    """Check each derived tensor of a published DAT file against what the architecture derives;
    return their keys (to drop). A table that differs means another network: refused."""
    derived = [k for k in sd if _DAT_DERIVED.fullmatch(k)]
    windows = {"0": (config.window_short, config.window_long), "1": (config.window_long, config.window_short)}
    for key in derived:
        value = sd[key]
        match = re.fullmatch(r".*\.attns\.([01])\.(rpe_biases|relative_position_index)", key)
        if match:
            window = windows[match[1]]
            expected = relative_offsets(window) if match[2] == "rpe_biases" else relative_pair_index(window)
        elif (mask := re.fullmatch(r".*\.attn_mask_([01])", key)) and value.dim() == 3:
            window = windows[mask[1]]
            side = math.isqrt(int(value.shape[0]) * int(value.shape[1]))  # the square size it was made for
            if side % math.lcm(*window):
                expected = torch.empty(0)
            else:
                expected = shift_mask(side, side, window, torch.device("cpu"))
        else:  # num_batches_tracked: a count, any value
            continue
        if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.to(expected.dtype), expected):
            raise CheckpointMismatchError(
                f"{key} differs from the table DAT derives for {window[0]} x {window[1]} windows; "
                "this checkpoint is not a DAT this tool knows"
            )
    return derived


def _dat_canonical(obj: object) -> tuple[StateDict, DATConfig]:
    sd = unwrap_state_dict(obj)
    layout = detect_layout(sd, DAT)
    assert layout is not None  # the DAT family has a fallback layout
    config = infer_dat_config(sd)
    derived = set(_check_dat_derived(sd, config))
    renamed, unplaced = rename_keys({k: v for k, v in sd.items() if k not in derived}, layout.rules(sd))
    renamed.update({key: sd[key] for key in unplaced})  # listed as unexpected by check_state_dict
    return renamed, config


# ---------------------------------------------------------------- the detection table


@dataclass(frozen=True)
class Layout:
    """A published state-dict layout: how to recognise it and how its keys map onto its family's names.

    ``family``: the architecture, :data:`SPSR` (canonical :class:`SPSRNet` keys),
    :data:`RRDBNET` (BasicSR names), :data:`SRVGG` or :data:`DAT` (their modules' names).
    ``marker``: what only this layout has (tried in table order). ``hint``: the key that marks
    it, for error messages. ``rules``: the state dict -> its renaming rules (some layouts number
    layers by depth). ``fallback``: the family's own
    layout, taken when the family is known (our files say it) and no marker matches, so that
    :func:`check_state_dict` lists what is missing.
    """

    name: str
    family: str
    marker: Callable[[Mapping[str, torch.Tensor]], bool]
    rules: Callable[[Mapping[str, torch.Tensor]], list[Rule]]
    hint: str = ""
    fallback: bool = False


def _has(key: str) -> Callable[[Mapping[str, torch.Tensor]], bool]:
    return lambda sd: key in sd


def _has_prefix(*prefixes: str) -> Callable[[Mapping[str, torch.Tensor]], bool]:
    return lambda sd: any(k.startswith(prefixes) for k in sd)


_IDENTITY = _compile([(r"(.+)", lambda m: m[1])])
_DAT_RULES = _compile([(rf"before_RG\.1\.{_PARAM}", _fixed("norm_in")), (r"(.+)", lambda m: m[1])])

#: Every layout this tool reads, in detection order (the first whose marker matches wins).
LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "spsr-published (model.N, b_*, f_*)",
        SPSR,
        is_published_layout,
        _published_rules,
        "model.0.weight with b_fea_conv.*",
    ),
    Layout(
        "spsr (spsr-cli)",
        SPSR,
        _has_prefix("trunk.", "branch.", "fusion."),
        lambda sd: _IDENTITY,
        "trunk.*, branch.*, fusion.*",
        fallback=True,
    ),
    Layout(
        "esrgan (model.N)",
        RRDBNET,
        _has("model.1.sub.0.RDB1.conv1.0.weight"),
        _esrgan_rules,
        "model.1.sub.0.RDB1.conv1.0.weight",
    ),
    Layout(
        "basicsr / real-esrgan (body.N.rdbK)",
        RRDBNET,
        _has("body.0.rdb1.conv1.weight"),
        _named_rules("body", "rdb", "conv_body", "conv_up", "conv_hr"),
        "body.0.rdb1.conv1.weight",
    ),
    Layout(
        "esrgan-new (RRDB_trunk)",
        RRDBNET,
        _has("RRDB_trunk.0.RDB1.conv1.weight"),
        _named_rules("RRDB_trunk", "RDB", "trunk_conv", "upconv", "HRconv"),
        "RRDB_trunk.0.RDB1.conv1.weight",
    ),
    Layout(
        "real-esrgan compact (body.N)",
        SRVGG,
        _is_srvgg,
        lambda sd: _IDENTITY,
        "body.0.weight (a convolution), body.1.weight (PReLU slopes), ...",
        fallback=True,
    ),
    Layout(
        "dat (layers.N.blocks.M)",
        DAT,
        _has("layers.0.blocks.0.attn.qkv.weight"),
        lambda sd: _DAT_RULES,
        "layers.0.blocks.0.attn.qkv.weight with conv_first.*",
        fallback=True,
    ),
)


def detect_layout(sd: Mapping[str, torch.Tensor], family: Optional[str] = None) -> Optional[Layout]:
    """The first layout (of ``family``, if given) whose marker ``sd`` has; else, with a
    ``family``, that family's fallback layout, if any; else None."""
    found = next((layout for layout in LAYOUTS if family in (None, layout.family) and layout.marker(sd)), None)
    if found is None and family is not None:
        found = next((layout for layout in LAYOUTS if layout.family == family and layout.fallback), None)
    return found


def unknown_layout_message(sd: Mapping[str, torch.Tensor], family: Optional[str] = None) -> str:
    """Why ``sd`` matches no layout: what was expected and what was found."""
    expected = "; ".join(f"{layout.name}: {layout.hint}" for layout in LAYOUTS if family in (None, layout.family))
    what = "generator" if family is None else FAMILY_NAMES[family]
    return (
        f"not a {what} checkpoint of any layout this tool reads (expected keys like: {expected}); "
        f"saw keys {listing(list(sd))}"
    )


# ---------------------------------------------------------------- entry points


def canonicalize_state_dict(obj: object) -> tuple[StateDict, SPSRConfig]:
    """Any supported SPSR checkpoint object -> (canonical state dict, inferred config).

    Keys that the published layout cannot explain are kept under their own names,
    so :func:`check_state_dict` lists them as unexpected.
    """
    sd = unwrap_state_dict(obj)
    config = infer_config(sd)
    layout = detect_layout(sd, SPSR)
    assert layout is not None  # the SPSR family has a fallback layout
    extras = set(_check_published_extras(sd, config)) if not layout.fallback else set()
    renamed, unplaced = rename_keys({k: v for k, v in sd.items() if k not in extras}, layout.rules(sd))
    renamed.update({key: sd[key] for key in unplaced})
    return renamed, config


def rrdb_to_basicsr(state_dict: object) -> StateDict:
    """Normalise an ESRGAN-family RRDBNet state dict to BasicSR key names (tensors unchanged).

    Raises :class:`CheckpointMismatchError` for an unknown layout or keys that cannot be placed.
    """
    sd = unwrap_state_dict(state_dict)
    layout = detect_layout(sd, RRDBNET)
    if layout is None:
        raise CheckpointMismatchError(unknown_layout_message(sd, RRDBNET))
    mapped, unknown = rename_keys(sd, layout.rules(sd))
    if unknown:
        raise CheckpointMismatchError(f"RRDBNet state dict has keys this converter cannot place: {listing(unknown)}")
    return mapped


def _rrdbnet_canonical(obj: object) -> tuple[StateDict, RRDBNetConfig]:
    sd = rrdb_to_basicsr(obj)
    return sd, infer_rrdbnet_config(sd)


#: Architecture -> (checkpoint object -> our key names and the config its shapes say).
NORMALIZERS: dict[str, Callable[[object], tuple[StateDict, AnyConfig]]] = {
    SPSR: canonicalize_state_dict,
    RRDBNET: _rrdbnet_canonical,
    SRVGG: _srvgg_canonical,
    DAT: _dat_canonical,
}


def normalize_generator(obj: object, architecture: Optional[str] = None) -> tuple[str, StateDict, AnyConfig]:
    """Any supported generator checkpoint -> (architecture, state dict under our names, inferred config).

    ``architecture``: what the file's metadata says (our safetensors); otherwise the layout is
    detected from the keys, and a checkpoint matching no layout raises
    :class:`CheckpointMismatchError` naming the layouts expected and the keys found.
    """
    if architecture is None:
        sd = unwrap_state_dict(obj)
        layout = detect_layout(sd)
        if layout is None:
            raise CheckpointMismatchError(unknown_layout_message(sd))
        architecture, obj = layout.family, sd
    if architecture not in NORMALIZERS:
        raise CheckpointMismatchError(
            f"the file names architecture {architecture!r}; this version reads {', '.join(sorted(NORMALIZERS))}"
        )
    state_dict, config = NORMALIZERS[architecture](obj)
    return architecture, state_dict, config


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
        name = getattr(getattr(model, "config", None), "architecture", type(model).__name__)
        lines = [f"the checkpoint does not match the {name} architecture; nothing was loaded:"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint != model)", shapes),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): {listing(items)}")
        lines.append(f"Check that the file is a {name} generator and that its stored config matches its tensors.")
        raise CheckpointMismatchError("\n".join(lines))


def build_generator(sd: Mapping[str, torch.Tensor], config: GeneratorConfig) -> torch.nn.Module:
    """Build the generator of ``config``'s architecture and load ``sd`` (our names) strictly, in float32."""
    model = architecture_of(config).build(config)
    check_state_dict(model, sd)
    model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
    return model


__all__ = [
    "DAT",
    "FAMILY_NAMES",
    "LAYOUTS",
    "Layout",
    "NORMALIZERS",
    "RRDBNET",
    "SPSR",
    "SRVGG",
    "StateDict",
    "build_generator",
    "canonicalize_state_dict",
    "check_state_dict",
    "detect_layout",
    "infer_config",
    "infer_dat_config",
    "infer_rrdbnet_config",
    "infer_srvgg_config",
    "is_published_layout",
    "listing",
    "normalize_generator",
    "rename_keys",
    "rrdb_to_basicsr",
    "unknown_layout_message",
    "unwrap_state_dict",
]
