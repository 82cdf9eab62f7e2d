"""Shared fixtures: every test runs isolated from the user's caches and the network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every cache/registry at a fresh temp dir and seed the RNGs."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SPSR_HOME", str(home / "spsr"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no accidental network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SPSR_OFFLINE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread is fastest (and robust on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the checkout (tests may read it; the product never does)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found")
    return SHARED


TINY = dict(nf=8, nb=2, gc=4)


def make_generator(seed: int = 0, **config: int):
    """A small SPSRNet with seeded weights whose outputs spread over (0, 1).

    Default init leaves the output near a constant; this scales weights like the
    parity fixture (0.5 / sqrt(fan_in)) and centres the final bias at 0.5.
    """
    from spsr_cli.model.spsr import SPSRConfig, SPSRNet

    generator = torch.Generator().manual_seed(seed)
    model = SPSRNet(config=SPSRConfig(**{**TINY, **config}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight"):
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5 / fan_in**0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        model.fusion.out.weight.mul_(30.0)
        model.fusion.out.bias.fill_(0.5)
    return model.eval()


@pytest.fixture
def tiny_model():
    return make_generator()


@pytest.fixture
def tiny_weights(tmp_path: Path, tiny_model) -> Path:
    """The tiny model written as an spsr-cli safetensors file (float32)."""
    from spsr_cli.weights.store import write_generator_file

    path = tmp_path / "tiny.safetensors"
    write_generator_file(
        path, tiny_model.state_dict(), tiny_model.config, source="test", licence="MIT", dtype=torch.float32
    )
    return path


def basicsr_rrdb_state(nf: int = 8, nb: int = 2, gc: int = 4) -> dict[str, torch.Tensor]:
    """A BasicSR RRDBNet x4 state dict (``conv_first``, ``body.N.rdbK.convJ``, ...) with distinct random tensors."""
    shapes: dict[str, tuple[int, int]] = {"conv_first": (nf, 3)}
    for i in range(nb):
        for k in (1, 2, 3):
            for j in range(1, 6):
                shapes[f"body.{i}.rdb{k}.conv{j}"] = (gc if j < 5 else nf, nf + (j - 1) * gc)
    shapes.update(
        {"conv_body": (nf, nf), "conv_up1": (nf, nf), "conv_up2": (nf, nf), "conv_hr": (nf, nf), "conv_last": (3, nf)}
    )
    sd = {}
    for name, (out, inp) in shapes.items():
        sd[f"{name}.weight"] = torch.randn(out, inp, 3, 3)
        sd[f"{name}.bias"] = torch.randn(out)
    return sd


def make_rrdbnet(seed: int = 3, **config: int):
    """A small RRDBNet (nf=8, nb=1) with seeded weights whose outputs spread over (0, 1), as
    :func:`make_generator` does for SPSR; the quickest network for OpenVINO and ONNX to convert."""
    from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig

    generator = torch.Generator().manual_seed(seed)
    model = RRDBNet(config=RRDBNetConfig(**{"nf": 8, "nb": 1, "gc": 4, **config}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5 / param[0].numel() ** 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        model.conv_last.weight.mul_(30.0)
        model.conv_last.bias.fill_(0.5)
    return model.eval().requires_grad_(False)


def needs_openvino() -> None:
    """Skip where the ``openvino`` package is absent; where present, import it as the product does
    (its usage telemetry off: never ``import openvino`` directly in a test)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("the openvino package is not installed (it comes with the test extra)")
    from spsr_cli.engine.openvino_backend import import_openvino

    import_openvino()


@pytest.fixture(scope="session")
def openvino_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``SPSR_HOME`` in which :func:`make_rrdbnet`'s model is already converted for OpenVINO
    (conversion takes seconds: once per session). Tests point ``SPSR_HOME`` at it or at a copy."""
    needs_openvino()
    from spsr_cli.engine.openvino_backend import OpenVINOBackend

    home = tmp_path_factory.mktemp("openvino-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPSR_HOME", str(home))
        OpenVINOBackend(make_rrdbnet(), torch.float32).run(torch.rand(1, 3, 16, 16))
    return home
