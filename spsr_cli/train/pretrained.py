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

The RRDBNet may come in any layout :func:`spsr_cli.weights.layouts.rrdb_to_basicsr` reads
(original ESRGAN, BasicSR / Real-ESRGAN, ESRGAN's later code); it is normalised to BasicSR
names first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from spsr_cli.errors import CheckpointMismatchError
from spsr_cli.model.blocks import RESIDUAL_SCALE
from spsr_cli.model.spsr import SPSRNet
from spsr_cli.weights.layouts import listing, rrdb_to_basicsr

#: Bias that keeps the SR features positive between the two Dirac convolutions. The
#: upsampler's LeakyReLU output of the RealSR DF2K network stays above -1.3 on training
#: photographs and above -2.2 on uniform noise (measured), so 4 leaves a margin; a small
#: shift keeps bfloat16 close (Set14 crop: bf16 vs fp32 42.8 dB with 4, 34.2 dB with 16).
DEFAULT_SHIFT = 4.0


def _placement(model: SPSRNet) -> dict[str, str]:
    """SPSRNet key -> BasicSR RRDBNet key for every tensor copied unchanged."""
    places = {
        "conv_first": "conv_first",
        "trunk_conv": "conv_body",
        "fusion.hr_conv0": "conv_hr",
        "fusion.out": "conv_last",
    }
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
        return (
            f"{len(self.loaded)} tensors copied from the RRDBNet, {len(self.constructed)} set for an exact "
            f"pass-through, {len(self.random)} left at their initialisation (gradient branch, fusion RDBs)"
        )


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
            f"{title}: {listing(items)}"
            for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if items
        ]
        raise CheckpointMismatchError(
            f"the RRDBNet does not fit SPSRNet({model.config}); nothing was changed. "
            + "; ".join(problems)
            + ". Build SPSRNet with the RRDBNet's nf/nb/gc/scale "
            "(ESRGAN/Real-ESRGAN/RealSR x4: nf=64, nb=23, gc=32, scale=4)."
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
    block_gain = 1.0 + RESIDUAL_SCALE  # each RDB is x + 0.2 * 0 = x; the RRDB adds 0.2x
    concat = torch.zeros_like(own["fusion.concat.weight"])
    concat[:, nf:] = dirac / block_gain
    constructed["fusion.concat.weight"] = concat
    constructed["fusion.concat.bias"] = torch.zeros_like(own["fusion.concat.bias"])
    with torch.no_grad():
        for key, rrdb in placement.items():
            own[key].copy_(source[rrdb].to(own[key].dtype))
        for key, value in constructed.items():
            own[key].copy_(value.to(own[key].dtype))
    return InitReport(
        loaded=sorted(placement),
        constructed=sorted(constructed),
        random=[k for k in own if k not in placement and k not in constructed],
    )
