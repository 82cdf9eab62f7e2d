"""Downloads tested for real against a local hub server on 127.0.0.1."""

import hashlib
import json

import pytest

from hubserver import local_hub
from spsr_cli.cli.app import run
from spsr_cli.errors import ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.weights import manifest as m
from spsr_cli.weights.hub import cached_hub_file, fetch_hub_file

REV = "0123456789abcdef0123456789abcdef01234567"
DATA = b"weights" * 1000
SHA = hashlib.sha256(DATA).hexdigest()
KEY = ("model", "org/spsr", REV, "spsr.safetensors")


@pytest.fixture
def hub(monkeypatch):
    with local_hub({KEY: DATA}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def fetch(**kw):
    args = dict(repo_id="org/spsr", filename="spsr.safetensors", revision=REV, sha256=SHA)
    return fetch_hub_file(**{**args, **kw})


def test_good_download_lands_in_the_hf_cache(hub, tmp_path):
    path = fetch()
    assert path.read_bytes() == DATA
    assert str(path).startswith(str(tmp_path.parent)) or "hub" in str(path)
    assert cached_hub_file(repo_id="org/spsr", filename="spsr.safetensors", revision=REV) == path
    assert any(method == "GET" and "resolve" in url for method, url in hub.requests)


def test_sha256_mismatch_deletes_the_file(hub):
    with pytest.raises(ChecksumMismatchError, match="deleted"):
        fetch(sha256="f" * 64)
    assert cached_hub_file(repo_id="org/spsr", filename="spsr.safetensors", revision=REV) is None


def test_missing_file_is_reported(hub):
    with pytest.raises(WeightsNotAvailableError, match="has no"):
        fetch(filename="other.safetensors", sha256=None)


def test_offline_without_cache_fails_and_makes_no_request(hub):
    with pytest.raises(WeightsNotAvailableError, match="offline"):
        fetch(offline=True)
    assert hub.requests == []


def test_offline_with_cache_uses_it_without_network(hub, monkeypatch):
    first = fetch()
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch() == first
    assert hub.requests == []


def test_unreachable_hub_without_cache(monkeypatch):
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)  # skip huggingface_hub's retry back-off
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(WeightsNotAvailableError, match="could not reach|has no"):
        fetch()


def test_cli_download_and_list(hub, tmp_path, monkeypatch, capsys):
    entry = {
        "name": "hub-model", "config": {"nf": 8, "nb": 2, "gc": 4, "scale": 4}, "scale": 4, "licence": "MIT",
        "provenance": "test", "sha256": SHA, "size": len(DATA),
        "source": {"type": "hub", "repo_id": "org/spsr", "revision": REV, "filename": "spsr.safetensors"},
    }
    manifest = tmp_path / "weights_manifest.json"
    manifest.write_text(json.dumps({"format_version": 1, "default": None, "models": [entry], "auxiliary": []}))
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: manifest)
    assert run(["weights", "download", "hub-model", "--offline"]) == 1
    assert run(["weights", "download", "hub-model"]) == 0
    capsys.readouterr()
    assert run(["weights", "list"]) == 0
    assert "hub-model" in capsys.readouterr().out
    assert run(["weights", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert (row["name"], row["cached"], row["sha256"], row["size"]) == ("hub-model", True, SHA, len(DATA))
