"""spsr_cli.weights.loader: one contract for load_generator across architectures (issue 26)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from spsr_cli.model.architectures import ARCHITECTURES
from spsr_cli.weights.store import write_generator_file

README = Path(__file__).resolve().parents[1] / "README.md"
#: Small configs of the architectures the generic one (nf 8, nb 1, gc 4) does not fit.
SMALL = {
    "srvgg": {"nf": 8, "num_conv": 2},
    "dat": {"nf": 16, "depth": 2, "heads": 2, "ffn_channels": 8, "window_short": 4, "window_long": 8},
}


def _readme_network_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (block,) = [b for b in blocks if "load_generator(" in b and "super_resolve(" in b]
    return block


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_readme_network_example_runs_for_every_architecture(tmp_path, name, one_thread):
    """The README's example used ``out.sr``, which only SPSR has: it failed for an RRDBNet."""
    architecture = ARCHITECTURES[name]
    fields = {f.name for f in dataclasses.fields(architecture.config_type)}
    small = SMALL.get(name, {k: v for k, v in {"nf": 8, "nb": 1, "gc": 4}.items() if k in fields})
    config = architecture.config_type(**small)
    model = architecture.build(config)
    path = tmp_path / "w.safetensors"
    write_generator_file(path, model.state_dict(), config, source="test", licence="MIT", dtype=torch.float32)
    code = _readme_network_example().replace("my-weights.safetensors", str(path)).replace("64, 64", "16, 16")
    if importlib.util.find_spec("openvino") is None:  # the optional backend: its line runs through torch here
        code = code.replace('backend="openvino"', 'backend="torch"')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    scale = config.scale
    assert scope["sr"].shape == (1, 3, 16 * scale, 16 * scale)
    assert scope["tiled"].shape == scope["sr"].shape
    assert torch.allclose(scope["tiled"], scope["sr"].clamp(0, 1), atol=0.02)  # the engine may run bf16
    if name == "spsr":
        assert torch.equal(scope["out"].sr, scope["sr"])
