"""``spsr export`` end to end: a fixed-size ONNX file, checked; refusals exit 2 and write nothing."""

import pytest
import torch
from conftest import make_rrdbnet

from spsr_cli.cli.app import run
from spsr_cli.weights.store import write_generator_file


@pytest.fixture
def weights(tmp_path):
    model = make_rrdbnet()
    path = tmp_path / "rrdb.safetensors"
    write_generator_file(path, model.state_dict(), model.config, source="test", licence="MIT", dtype=torch.float32)
    return path


def test_export_a_fixed_tile_and_check_it(tmp_path, weights, capsys, monkeypatch):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    assert run(["export", str(weights), "--tile", "24"]) == 0
    err = capsys.readouterr().err
    assert "input lr: 1 x 3 x 24 x 24" in err and "onnxruntime agrees with torch float32" in err
    session = onnxruntime.InferenceSession("rrdb-tile24.onnx", providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 24, 24] and session.get_outputs()[0].shape == [1, 3, 96, 96]
    assert run(["export", str(weights), "--tile", "24"]) == 2  # never replaces a file without --force
    assert "--force" in capsys.readouterr().err


def test_export_usage_errors(tmp_path, weights, capsys):
    assert run(["export", str(weights), "--format", "tflite", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "--format 'tflite'" in capsys.readouterr().err
    assert run(["export", str(weights), "-o", str(tmp_path)]) == 2  # a folder
    assert run(["export", "no-such-model", "-o", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()
