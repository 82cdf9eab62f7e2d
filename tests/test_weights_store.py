import json

import pytest
import torch
from safetensors import safe_open

from spsr_cli import load_generator
from spsr_cli.errors import ChecksumMismatchError, UnknownModelError, WeightsNotAvailableError
from spsr_cli.weights.loader import NO_DEFAULT_HELP, resolve_weights
from spsr_cli.weights.manifest import load_manifest
from spsr_cli.weights.store import import_checkpoint, write_generator_file


def test_written_file_carries_config_and_provenance(tiny_weights, tiny_model):
    with safe_open(str(tiny_weights), framework="pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["config"]) == tiny_model.config.to_dict()
    assert meta["scale"] == "4" and meta["licence"] == "MIT" and meta["source"] == "test"
    loaded = load_generator(tiny_weights)
    assert not loaded.training
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x).sr, tiny_model(x).sr)


def test_float16_export_is_half_size(tmp_path, tiny_model, tiny_weights):
    half = tmp_path / "half.safetensors"
    write_generator_file(half, tiny_model.state_dict(), tiny_model.config, source="t", licence="MIT")
    assert half.stat().st_size < 0.6 * tiny_weights.stat().st_size
    assert load_generator(half).conv_first.weight.dtype == torch.float32


def test_import_pth_registers_by_name(tmp_path, tiny_model):
    pth = tmp_path / "ckpt.pth"
    torch.save({"params_ema": tiny_model.state_dict()}, pth)
    entry = import_checkpoint(pth, name="mine", licence="CC-BY-4.0")
    assert entry.origin == "local" and entry.licence == "CC-BY-4.0"
    model = load_generator("mine")
    x = torch.rand(1, 3, 6, 6)
    assert torch.allclose(model(x).sr, tiny_model(x).sr)
    with pytest.raises(UnknownModelError, match="exists already"):
        import_checkpoint(pth, name="mine")
    assert import_checkpoint(pth, name="mine", replace=True).name == "mine"


def test_registered_file_that_changed_is_refused(tmp_path, tiny_model):
    pth = tmp_path / "ckpt.pth"
    torch.save(tiny_model.state_dict(), pth)
    entry = import_checkpoint(pth, name="changing")
    with open(entry.source.path, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ChecksumMismatchError, match="changed"):
        load_generator("changing")


def test_no_default_model_says_how_to_get_weights():
    if load_manifest().default is not None:
        pytest.skip("a default model is shipped")
    with pytest.raises(WeightsNotAvailableError) as err:
        resolve_weights(None)
    assert str(err.value) == NO_DEFAULT_HELP
    assert "spsr weights import" in NO_DEFAULT_HELP


def test_missing_path_and_unknown_extension(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        resolve_weights(str(tmp_path / "nope.pth"))
    odd = tmp_path / "w.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(UnknownModelError, match="unsupported checkpoint extension"):
        load_generator(odd)
