"""The OpenVINO backend: conversion, parity with torch, the cache (reused, damaged, rebuilt).

The cache file format and the weights key are tested everywhere; the rest skips where the
``openvino`` package is not installed (CI installs it: the test extra).
"""

import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import make_generator, make_rrdbnet, needs_openvino

from spsr_cli.engine.backends import image_module
from spsr_cli.engine.openvino_backend import (
    CacheDamaged,
    OpenVINOBackend,
    cache_root,
    conversion_key,
    read_container,
    write_container,
)
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.records import warm_up
from spsr_cli.engine.tiling import Upscaler
from spsr_cli.errors import BackendError


def psnr(a, b):
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_cache_files_are_whole_or_refused(tmp_path):
    path = tmp_path / "c.ovc"
    write_container(path, {"xml": b"<net/>", "bin": bytes(range(256)) * 4}, {"dynamic": True})
    parts, header = read_container(path)
    assert bytes(parts["xml"]) == b"<net/>" and len(parts["bin"]) == 1024 and header["dynamic"] is True
    data = path.read_bytes()
    for damaged in (data[:-1], data + b"x", data[:-10] + b"0123456789", b"not a cache file"):
        path.write_bytes(damaged)
        with pytest.raises(CacheDamaged):
            read_container(path)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_the_weights_key_follows_the_weights():
    model = make_rrdbnet()
    key = conversion_key(model)
    assert key == conversion_key(make_rrdbnet()) and len(key) == 64
    with torch.no_grad():
        model.conv_last.bias[0] += 1e-3
    assert conversion_key(model) != key


@pytest.fixture
def home(openvino_home, tmp_path, monkeypatch):
    """A private copy of the session's OpenVINO cache (the tiny RRDBNet already converted)."""
    copy = tmp_path / "spsr"
    shutil.copytree(openvino_home, copy)
    monkeypatch.setenv("SPSR_HOME", str(copy))
    return copy


def test_openvino_matches_torch_through_the_tiler(home, one_thread):
    model = make_rrdbnet()
    torch.manual_seed(1)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 11), size=(36, 44), mode="bilinear")
    reference = Upscaler(model, InferenceOptions(precision="fp32", tile=0)).upscale(image)
    assert reference.std() > 0.02  # the output is not flat, so agreement means something
    fp32 = Upscaler(model, InferenceOptions(precision="fp32", tile=16, backend="openvino"))
    bf16 = Upscaler(model, InferenceOptions(precision="bf16", tile=16, backend="openvino"))
    out32, out16 = fp32.upscale(image), bf16.upscale(image)
    assert fp32.backend.name == bf16.backend.name == "openvino"
    assert "convert" not in fp32.backend.timings  # converted once, in the session's cache
    assert psnr(out32, reference) > 60 and psnr(out16, reference) > 45
    assert psnr(out16, reference) < psnr(out32, reference)  # bf16 really ran in bf16


def test_a_second_run_converts_and_compiles_nothing(home, one_thread):
    model, x = make_rrdbnet(), torch.rand(1, 3, 20, 16)
    first = OpenVINOBackend(model, torch.float32)
    assert first.is_converted()
    out = first.run(x)
    assert "convert" not in first.timings and first.timings["compile"] > 0
    second = OpenVINOBackend(model, torch.float32)  # as a new process would
    assert torch.equal(second.run(x), out)
    assert set(second.timings) == {"load"}


def test_an_instruction_set_cap_compiles_its_own_model(home, monkeypatch, one_thread):
    """``ONEDNN_MAX_CPU_ISA`` changes the kernels but not what OpenVINO reports of the processor: a model
    compiled without the cap is not loaded under it."""
    model, x = make_rrdbnet(), torch.rand(1, 3, 20, 16)
    OpenVINOBackend(model, torch.float32).run(x)
    folder = cache_root() / conversion_key(model)
    (uncapped,) = folder.glob("f32-1x3x20x16-*.ovc")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = OpenVINOBackend(model, torch.float32)
    capped.run(x)
    assert capped.timings["compile"] > 0 and "load" not in capped.timings
    assert len(list(folder.glob("f32-1x3x20x16-*.ovc"))) == 2 and uncapped.is_file()


def test_a_damaged_cache_file_is_rebuilt(home, caplog, one_thread):
    model, x = make_rrdbnet(), torch.rand(1, 3, 20, 16)
    reference = OpenVINOBackend(model, torch.float32).run(x)
    folder = cache_root() / conversion_key(model)
    (compiled,) = folder.glob("f32-1x3x20x16-*.ovc")
    data = bytearray(compiled.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    compiled.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="spsr_cli"):
        backend = OpenVINOBackend(model, torch.float32)
        assert torch.equal(backend.run(x), reference)
    assert "rebuilding it" in caplog.text and backend.timings["compile"] > 0
    read_container(compiled)  # whole again
    ir = folder / "ir.ovc"
    ir.write_bytes(ir.read_bytes()[:-100])  # truncated
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spsr_cli"):
        again = OpenVINOBackend(model, torch.float32)
        assert torch.allclose(again.run(torch.rand(1, 3, 12, 12)).float().mean(), torch.tensor(0.5), atol=0.5)
    assert "rebuilding it" in caplog.text and again.timings["convert"] > 0
    read_container(ir)


def test_a_compilation_openvino_refuses_names_the_precision_and_the_way_out(home, monkeypatch, one_thread):
    """As OpenVINO 2026.4 answers bf16 where oneDNN is held to AVX2 (``object is not initialized``)."""
    import spsr_cli.engine.openvino_runtime as runtime

    core = runtime.shared_core()

    class Refusing:
        def __getattr__(self, name):
            return getattr(core, name)

        def compile_model(self, *args, **kwargs):
            raise RuntimeError("Exception from src/inference/src/dev/plugin.cpp:54:\nobject is not initialized\n\n")

    monkeypatch.setattr(runtime, "shared_core", Refusing)
    with pytest.raises(
        BackendError, match=r"for 1x3x13x11 in bf16 \(.*initialized\); use --backend torch or --precision fp32"
    ):
        OpenVINOBackend(make_rrdbnet(), torch.bfloat16).run(torch.rand(1, 3, 13, 11))
    with pytest.raises(BackendError, match=r"in f32 \(.*\); use --backend torch$"):
        OpenVINOBackend(make_rrdbnet(), torch.float32).run(torch.rand(1, 3, 13, 11))


def test_the_warm_up_converts_once_and_compiles_nothing(tmp_path, monkeypatch, one_thread):
    """A run's warm-up (``--json``) pays OpenVINO's one-off conversion and compiles no shape: a
    compiled 64 x 64 model no image uses cost a compilation and 0.27 GiB on the default model."""
    needs_openvino()
    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "spsr"))
    model = make_rrdbnet()
    first = Upscaler(model, InferenceOptions(precision="fp32", tile=16, backend="openvino"))
    assert not first.backend.is_converted()
    warm_up(first)
    backend = first.backend
    assert backend.is_converted() and backend.timings["convert"] > 0 and "compile" not in backend.timings
    assert [p.name for p in backend.cache_dir.iterdir()] == ["ir.ovc"]
    again = Upscaler(model, InferenceOptions(precision="fp32", tile=16, backend="openvino"))
    warm_up(again)
    assert not again.backend.timings  # converted already: nothing read, converted or compiled
    out = again.upscale(torch.rand(1, 3, 12, 12))
    assert out.shape == (1, 3, 48, 48) and again.backend.timings["compile"] > 0


class _SizeBaked(torch.nn.Module):
    """An RRDBNet whose forward does shape arithmetic in Python, so a trace bakes the traced size in."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    @property
    def scale(self):
        return self.inner.scale

    def forward(self, x):
        out = self.inner(x)
        height = int(x.shape[2]) * self.scale  # a Python int: a constant in the trace
        return out[:, :, :height]


def test_a_model_whose_trace_bakes_its_size_is_converted_per_shape(tmp_path, monkeypatch, caplog, one_thread):
    needs_openvino()
    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "spsr"))
    model = _SizeBaked(make_rrdbnet())
    x = torch.rand(1, 3, 14, 18)
    with caplog.at_level(logging.INFO, logger="spsr_cli"):
        out = OpenVINOBackend(model, torch.float32).run(x)
    assert "converted per tile shape" in caplog.text
    with torch.inference_mode():
        assert psnr(out, model(x)) > 60


def test_spsr_converts_too_the_backend_knows_no_architecture(one_thread):
    """The SPSR generator (two branches, a gradient map) converts through the same path as RRDBNet."""
    needs_openvino()
    model = make_generator()
    torch.manual_seed(2)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 4), size=(20, 16), mode="bilinear")
    backend = OpenVINOBackend(model, torch.float32)
    out = backend.run(x)
    with torch.inference_mode():
        reference = image_module(model)(x)
    assert out.shape == reference.shape == (1, 3, 80, 64) and reference.std() > 0.02
    assert psnr(out.clamp(0, 1), reference.clamp(0, 1)) > 60 and backend.timings["convert"] > 0


@pytest.mark.parametrize("arch", ["srvgg", "dat"])
def test_the_compact_and_dat_networks_convert_through_the_same_path(arch, tmp_path, monkeypatch, one_thread):
    """Issue 25's architectures run on OpenVINO with no code of their own: SRVGGNetCompact (pixel
    shuffle + nearest-upsampled input) and DAT (window attention, padding to the window multiple,
    channel attention); the input is not a window multiple, so DAT's padding is in the graph."""
    needs_openvino()
    from spsr_cli.model.dat import DAT, DATConfig
    from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "spsr"))
    torch.manual_seed(3)
    if arch == "srvgg":
        model = SRVGGNetCompact(config=SRVGGConfig(nf=8, num_conv=3)).eval()
    else:
        config = DATConfig(nf=16, depth=2, heads=2, ffn_channels=16, window_short=2, window_long=4)
        model = DAT(config=config).eval()
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 4), size=(18, 14), mode="bilinear")
    backend = OpenVINOBackend(model, torch.float32)
    out = backend.run(x)
    with torch.inference_mode():
        reference = image_module(model)(x)
    assert out.shape == reference.shape == (1, 3, 72, 56) and reference.std() > 0.01
    assert psnr(out.clamp(0, 1), reference.clamp(0, 1)) > 60


def test_a_compiled_dat_holds_one_mask_per_window_shape(tmp_path, monkeypatch, one_thread):
    """Compiled for one tile shape, the shifted windows' mask must stay one bool per window and token pair,
    made once per forward: added to the position bias it became an nW x heads x N x N constant per shifted
    branch (642 MB for DAT-light x4 at 160 x 160; 68 MB for this network at half its depth), and made in
    each shifted block one bool mask per branch (7.4 MB here). Made once: 4.3 MB."""
    needs_openvino()
    from spsr_cli.model.dat import DAT, DATConfig

    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "spsr"))
    torch.manual_seed(3)
    config = DATConfig(nf=16, groups=2, depth=8, heads=8, ffn_channels=16, window_short=8, window_long=8)
    model = DAT(config=config).eval()  # shifted spatial blocks: 2 and 6 of group 0, 0 and 4 of group 1
    backend = OpenVINOBackend(model, torch.float32)
    x = torch.rand(1, 3, 128, 128)
    out = backend.run(x)
    with torch.inference_mode():
        assert psnr(out.clamp(0, 1), model(x).clamp(0, 1)) > 60
    (compiled,) = (cache_root() / conversion_key(model)).glob("f32-1x3x128x128-*.ovc")
    assert compiled.stat().st_size < 5.5e6, compiled.stat().st_size


def _run_script(script: str, **env: str):
    """Run ``script`` in a fresh interpreter that imports this checkout and ``conftest`` (argv[1]),
    with ``env`` added to this process's environment (a value of "" removes the variable)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    merged = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    merged.update(env)
    merged = {name: value for name, value in merged.items() if value != ""}
    return subprocess.run(
        [sys.executable, "-c", script, str(tests)], env=merged, capture_output=True, text=True, timeout=300
    )


_SIGNAL_AFTER_BACKENDS = """
import gc, os, signal, sys
import torch
sys.path.insert(0, sys.argv[1])
from conftest import make_rrdbnet
from spsr_cli.engine.openvino_backend import OpenVINOBackend

torch.set_num_threads(1)
model, x = make_rrdbnet(), torch.rand(1, 3, 16, 16)
first = OpenVINOBackend(model, torch.float32)
first.run(x)
second = OpenVINOBackend(model, torch.float32)
second.run(x)
del first  # dropped in another order than made (as a batch, compare or the tests drop them)
gc.collect()
third = OpenVINOBackend(model, torch.float32)
third.run(x)
del second, third
gc.collect()
caught = []
signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
os.kill(os.getpid(), signal.SIGUSR1)  # handled on the thread's alternate signal stack
print("caught", len(caught))
"""


def test_backends_dropped_in_any_order_leave_signals_working(home):
    """Each openvino.Core swaps the thread's alternate signal stack and restores the one it found when
    destroyed; Cores dropped out of order left a freed stack, and the next handled signal (Ctrl-C, a
    SIGCHLD) killed the process with SIGSEGV (how the full test suite crashed). One shared Core."""
    done = _run_script(_SIGNAL_AFTER_BACKENDS)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split() == ["caught", "1"]


_CONVERT_WITH_AUDIT = """
import os, sys
events = []
sys.addaudithook(lambda event, args: events.append(event) if event in ("os.fork", "subprocess.Popen") else None)
import torch
sys.path.insert(0, sys.argv[1])
from conftest import make_rrdbnet
from spsr_cli.engine.openvino_backend import OpenVINOBackend

torch.set_num_threads(1)
backend = OpenVINOBackend(make_rrdbnet(), torch.float32)
backend.run(torch.rand(1, 3, 16, 16))
print("converted" if backend.timings["convert"] > 0 else "not converted", *events)
"""


def test_openvino_sends_no_telemetry(tmp_path):
    """OpenVINO's converter reports usage (a forked process posting to Google Analytics, a client id
    written under ~/intel) unless told not to; importing it through the backend turns that off."""
    needs_openvino()
    home = tmp_path / "home"
    home.mkdir()
    done = _run_script(
        _CONVERT_WITH_AUDIT,
        HOME=str(home),
        SPSR_HOME=str(tmp_path / "spsr"),  # an empty cache: the conversion runs
        CI="",
        TF_BUILD="",
        JENKINS_URL="",  # unset: OpenVINO turns its telemetry off on CI by itself
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["converted"]  # no fork, no subprocess
    assert list(home.iterdir()) == []  # no ~/intel/openvino_ga_cid
