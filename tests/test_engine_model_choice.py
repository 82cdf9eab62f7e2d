"""--model auto: low-quality JPEGs to the JPEG model, the rest to the default; each model loaded once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import make_generator
from PIL import Image

from spsr_cli.engine.batch import OutputSpec, plan_jobs, run_jobs
from spsr_cli.engine.model_choice import AUTO, JPEG_MODEL, JPEG_QUALITY_THRESHOLD, ModelChoice, choose_for_file
from spsr_cli.engine.options import InferenceOptions

OPTIONS = InferenceOptions(device="cpu", precision="fp32", tile=0)


def _photos(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    paths = {"low.jpg": 30, "high.jpg": 98, "clean.png": None}
    for name, quality in paths.items():
        image = Image.fromarray(pixels)
        image.save(folder / name, **({"quality": quality} if quality else {}))
    return {name: folder / name for name in paths}


def test_the_choice_follows_the_estimated_jpeg_quality(tmp_path) -> None:
    photos = _photos(tmp_path / "in")
    low = choose_for_file(photos["low.jpg"])
    assert low.model == JPEG_MODEL and f"quality 30 < {JPEG_QUALITY_THRESHOLD}" in low.reason
    assert choose_for_file(photos["high.jpg"]).model is None  # the default model
    assert choose_for_file(photos["clean.png"]).reason == "not a JPEG"


def test_auto_loads_each_model_once_and_logs_each_choice(tmp_path, caplog) -> None:
    _photos(tmp_path / "in")
    loaded: list[str | None] = []

    def load(name):
        loaded.append(name)
        return make_generator(seed=len(loaded))

    choice = ModelChoice(AUTO, OPTIONS, load=load, default_name="spsr-x4")
    jobs = plan_jobs([str(tmp_path / "in")], OutputSpec(output=tmp_path / "out"), scale=choice.scale)
    with caplog.at_level(logging.INFO, logger="spsr_cli"):
        result = run_jobs(jobs, choice, OPTIONS)
    assert len(result.done) == 3 and not result.failed
    assert loaded == [None, JPEG_MODEL]  # the default at once, the JPEG model on first need; never again
    assert "low.jpg: model realsr-df2k-jpeg (JPEG of estimated quality 30 < 96)" in caplog.text
    assert "high.jpg: model spsr-x4 (JPEG of estimated quality 98 >= 96)" in caplog.text
    assert "clean.png: model spsr-x4 (not a JPEG)" in caplog.text


def test_the_default_model_hints_once_at_low_quality_jpegs(tmp_path, caplog) -> None:
    photos = _photos(tmp_path / "in")
    (tmp_path / "in" / "low2.jpg").write_bytes(photos["low.jpg"].read_bytes())
    choice = ModelChoice(None, OPTIONS, load=lambda name: make_generator(), default_name="spsr-x4")
    with caplog.at_level(logging.INFO, logger="spsr_cli"):
        for name in ("clean.png", "low.jpg", "low2.jpg", "high.jpg"):
            choice.upscaler_for(tmp_path / "in" / name)
    assert caplog.text.count("--model auto") == 1 and "low.jpg" in caplog.text
    caplog.clear()
    chosen = ModelChoice("my-model", OPTIONS, load=lambda name: make_generator(), default_name="spsr-x4")
    with caplog.at_level(logging.INFO, logger="spsr_cli"):
        chosen.upscaler_for(photos["low.jpg"])
    assert "--model auto" not in caplog.text  # a model the user chose gets no hint


def test_auto_refuses_models_of_different_scales(tmp_path) -> None:
    from spsr_cli.errors import UsageError

    photos = _photos(tmp_path / "in")
    choice = ModelChoice(AUTO, OPTIONS, load=lambda name: make_generator(scale=4 if name is None else 2))
    with pytest.raises(UsageError, match="x2 but the default model is x4"):
        choice.upscaler_for(photos["low.jpg"])
