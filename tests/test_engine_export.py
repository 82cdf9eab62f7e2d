"""ONNX export: the file's onnxruntime output against torch float32 (skips without onnxscript/onnxruntime)."""

import numpy as np
import pytest
from conftest import make_rrdbnet

from spsr_cli.engine.export import check_onnx, export_onnx
from spsr_cli.errors import UsageError


def test_exported_onnx_agrees_with_torch_at_any_size(tmp_path, one_thread):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = make_rrdbnet()
    result = export_onnx(model, tmp_path / "m.onnx")
    assert result.input_shape == ("batch", 3, "height", "width") and result.size_bytes > 10_000
    assert not list(tmp_path.glob(".*.tmp")) and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one file
    assert check_onnx(result.path, model) > 50  # measured above 120 dB
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("lr", "sr")
    sr = session.run(None, {"lr": np.random.default_rng(0).random((2, 3, 20, 36), dtype=np.float32)})[0]
    assert sr.shape == (2, 3, 80, 144)  # batch, height and width are free


def test_export_refuses_a_tile_too_small(tmp_path):
    with pytest.raises(UsageError, match="at least 8"):
        export_onnx(make_rrdbnet(), tmp_path / "m.onnx", tile=4)
    assert not (tmp_path / "m.onnx").exists()
