"""spsr_cli.weights.auxiliary: every listed auxiliary name has a fetcher for its kind, or says why not."""

from __future__ import annotations

import dataclasses

import pytest

from spsr_cli.errors import WeightsNotAvailableError
from spsr_cli.weights import auxiliary
from spsr_cli.weights.manifest import load_manifest


def test_every_downloadable_kind_has_a_fetcher():
    kinds = {entry.kind for entry in auxiliary.auxiliary_entries().values()}
    assert kinds - set(auxiliary.FETCHERS) == {"structure-extractor"}  # bundled: nothing to download


def test_fetch_goes_through_the_fetcher_of_the_entry_kind(monkeypatch):
    seen = []

    def fake(entry, offline):
        seen.append((entry.name, offline))
        return "here"

    monkeypatch.setitem(auxiliary.FETCHERS, "niqe-model", fake)
    assert auxiliary.fetch_auxiliary("niqe-pristine-params", offline=True) == "here"
    assert seen == [("niqe-pristine-params", True)]


def test_unpinned_or_unfetchable_entries_are_refused_with_the_reason():
    manifest = load_manifest()
    entry = manifest.auxiliary["vgg19-torchvision"]
    manifest.auxiliary["vgg19-torchvision"] = dataclasses.replace(entry, sources=({**entry.source, "sha256": None},))
    with pytest.raises(WeightsNotAvailableError, match="no source of it has a pinned sha256"):
        auxiliary.fetch_auxiliary("vgg19-torchvision", manifest=manifest)
    with pytest.raises(WeightsNotAvailableError, match="no downloader"):
        auxiliary.fetch_auxiliary("nse-jigsaw", manifest=manifest)
