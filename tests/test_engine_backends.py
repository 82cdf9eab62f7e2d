"""Backend choice and the torch backend (the OpenVINO backend: tests/test_engine_openvino_backend.py)."""

import logging

import pytest
import torch
from conftest import make_generator, make_rrdbnet, needs_openvino

from spsr_cli.engine import openvino_runtime, tiling
from spsr_cli.engine.backends import TorchBackend, image_module, resolve_backend
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.tiling import Upscaler
from spsr_cli.errors import BackendError, UsageError

CPU = torch.device("cpu")


def test_resolve_backend(monkeypatch):
    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: True)
    assert resolve_backend("auto", CPU) == "auto"  # decided per image by the upscaler
    assert resolve_backend("AUTO", CPU, compile=True) == "torch"  # --compile is torch's
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("torch", CPU) == "torch" and resolve_backend("openvino", CPU) == "openvino"
    with pytest.raises(UsageError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))
    with pytest.raises(UsageError, match="--compile"):
        resolve_backend("openvino", CPU, compile=True)
    with pytest.raises(UsageError, match="use auto, torch, openvino"):
        resolve_backend("onnx", CPU)
    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: False)
    assert resolve_backend("auto", CPU) == "torch"
    with pytest.raises(UsageError, match=r"spsr-cli\[openvino\]"):
        resolve_backend("openvino", CPU)


def test_torch_backend_runs_the_image_output_and_leaves_the_model_alone(one_thread):
    model = make_rrdbnet()
    before = model.conv_first.weight.clone()
    backend = TorchBackend(model, CPU, torch.bfloat16)
    x = torch.rand(1, 3, 12, 10)
    with torch.inference_mode():
        reference = image_module(model)(x)
        low = backend.run(x)
        full = backend.run(x, torch.float32)  # the overflow fallback
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32 and full.shape == (1, 3, 48, 40)
    assert torch.allclose(full, reference, atol=1e-5)
    assert (low.float() - reference).abs().max() < 0.1
    assert torch.equal(model.conv_first.weight, before) and model.conv_first.weight.dtype == torch.float32


def test_auto_runs_torch_until_the_work_pays_for_a_conversion(monkeypatch, one_thread):
    """Small images stay on torch; once the images add up to AUTO_CONVERT_PIXELS, OpenVINO takes over."""
    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: True)
    ran = []

    class FakeOpenVINO:
        name, device, dtype = "openvino", CPU, torch.float32

        def __init__(self, model, dtype):
            self.inner = TorchBackend(model, CPU, dtype)

        def is_converted(self):
            return False

        def run(self, patch, dtype=None):
            ran.append(tuple(patch.shape))
            return self.inner.run(patch, dtype)

        def describe(self):
            return "fake openvino"

    monkeypatch.setattr("spsr_cli.engine.openvino_backend.OpenVINOBackend", FakeOpenVINO)
    model = make_rrdbnet()
    up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", backend="auto"))
    monkeypatch.setattr(tiling, "AUTO_CONVERT_PIXELS", 2.5 * 10 * 12)
    x = torch.rand(1, 3, 10, 12)
    names = []
    for _ in range(4):
        up.upscale(x)
        names.append(up.backend.name)
    assert names == ["torch", "torch", "openvino", "openvino"] and len(ran) == 2


def _never_converted(monkeypatch) -> None:
    """OpenVINO installed, and its backend torch under another name that has converted nothing yet."""
    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: True)

    class FakeOpenVINO(TorchBackend):
        name = "openvino"

        def __init__(self, model, dtype):
            super().__init__(model, CPU, dtype)

        def is_converted(self):
            return False

    monkeypatch.setattr("spsr_cli.engine.openvino_backend.OpenVINOBackend", FakeOpenVINO)


def test_auto_converts_after_the_same_pixels_whatever_the_network_costs(monkeypatch):
    """The conversion pays for itself after 15-105 thousand input pixels for every architecture measured
    (torch time and conversion both grow with the graph): a 100 x 100 photo stays on torch, a 240 x 240
    one converts, for a network 16x cheaper per pixel as for the dearer one."""
    _never_converted(monkeypatch)
    models = [make_rrdbnet(), make_generator()]
    macs = [m.config.macs_per_input_pixel for m in models]
    assert max(macs) > 15 * min(macs)
    for model in models:
        options = InferenceOptions(device="cpu", precision="fp32", backend="auto")
        assert Upscaler(model, options).backend_for(100, 100).name == "torch"
        assert Upscaler(model, options).backend_for(240, 240).name == "openvino"


def test_a_held_backend_runs_every_frame_of_a_video(monkeypatch, one_thread):
    """one_backend() weighs a video's frames together: a long video converts at once and never switches."""
    _never_converted(monkeypatch)
    model = make_rrdbnet()
    monkeypatch.setattr(tiling, "AUTO_CONVERT_PIXELS", 3 * 10 * 12)
    x = torch.rand(1, 3, 10, 12)
    short = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", backend="auto"))
    with short.one_backend(10, 12, count=2):  # two frames: not worth a conversion
        assert {short.upscale(x) is not None and short.backend.name for _ in range(4)} == {"torch"}
    long = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", backend="auto"))
    with long.one_backend(10, 12, count=5) as held:
        assert held.name == "openvino"
        assert {long.upscale(x) is not None and long.backend.name for _ in range(2)} == {"openvino"}


def test_auto_falls_back_to_torch_when_openvino_cannot_convert(monkeypatch, caplog, one_thread):
    needs_openvino()  # the backend module it patches imports the package
    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: True)
    monkeypatch.setattr(tiling, "AUTO_CONVERT_PIXELS", 0)

    def cannot(self, patch, dtype=None):
        raise BackendError("OpenVINO cannot convert this rrdbnet model (test)")

    monkeypatch.setattr("spsr_cli.engine.openvino_backend.OpenVINOBackend.run", cannot)
    model = make_rrdbnet()
    up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", backend="auto"))
    x = torch.rand(1, 3, 10, 12)
    with caplog.at_level(logging.WARNING, logger="spsr_cli"):
        out = up.upscale(x)
    assert up.backend.name == "torch" and "running it with torch" in caplog.text
    assert torch.equal(out, Upscaler(model, InferenceOptions(device="cpu", precision="fp32")).upscale(x))
    assert up.upscale(x).shape == out.shape and up.backend.name == "torch"  # for good
    explicit = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", backend="openvino"))
    with pytest.raises(BackendError, match="cannot convert"):  # asked for by name: the error stands
        explicit.upscale(x)
