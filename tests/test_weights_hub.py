"""Downloads tested for real against a local hub server on 127.0.0.1."""

import hashlib
import json

import pytest
from hubserver import local_hub

from spsr_cli.cli.app import run
from spsr_cli.errors import ChecksumMismatchError, WeightsNotAvailableError
from spsr_cli.weights import manifest as m
from spsr_cli.weights.hub import HubUnreachableError, cached_hub_file, fetch_hub_file, fetch_hub_file_checked

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
    assert any(method == "GET" and url.startswith("/cdn/") for method, url in hub.requests)  # LFS: via the CDN


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


def test_unreachable_hub_without_cache_fails_at_once_without_retries(monkeypatch, capfd):
    import huggingface_hub.utils._http as hf_http

    slept = []
    monkeypatch.setattr(hf_http.time, "sleep", slept.append)  # any back-off would show up here
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnreachableError, match="could not reach"):
        fetch()
    assert slept == []
    assert "Retrying" not in capfd.readouterr().err


def test_hub_etag_verifies_an_unpinned_file_and_is_recorded(hub):
    got = fetch_hub_file_checked(repo_id="org/spsr", filename="spsr.safetensors", revision=REV, sha256=None)
    assert got.sha256 == SHA and got.etag == SHA and got.verified_by == ("hub-etag",)
    again = fetch_hub_file_checked(repo_id="org/spsr", filename="spsr.safetensors", revision=REV, sha256=SHA)
    assert again.etag == SHA and again.verified_by == ("hub-etag", "pin")  # from the cache: the blob is named by it


def test_bytes_that_differ_from_the_hub_etag_are_deleted(monkeypatch):
    bad = b"x" * len(DATA)  # same size: huggingface_hub's own size check passes
    with local_hub({KEY: DATA}, corrupt={KEY: bad}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        with pytest.raises(ChecksumMismatchError, match="hub's .* deleted"):
            fetch_hub_file_checked(repo_id="org/spsr", filename="spsr.safetensors", revision=REV, sha256=None)
    assert cached_hub_file(repo_id="org/spsr", filename="spsr.safetensors", revision=REV) is None


def test_plain_git_file_is_verified_by_its_blob_id(monkeypatch):
    with local_hub({KEY: DATA}, plain={KEY}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        got = fetch_hub_file_checked(repo_id="org/spsr", filename="spsr.safetensors", revision=REV, sha256=None)
    assert got.verified_by == ("hub-etag",) and got.sha256 == SHA and len(got.etag or "") == 40


def test_cli_download_and_list(hub, tmp_path, monkeypatch, capsys):
    entry = {
        "name": "hub-model",
        "config": {"nf": 8, "nb": 2, "gc": 4, "scale": 4},
        "scale": 4,
        "licence": "MIT",
        "provenance": "test",
        "sha256": SHA,
        "size": len(DATA),
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


def test_spsr_offline_stops_a_hub_download_even_when_offline_false_is_passed(hub, monkeypatch):
    """Issue 26: one variable for every source; the environment wins over a library default."""
    monkeypatch.setenv("SPSR_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError, match="offline"):
        fetch(offline=False)
    assert hub.requests == []
