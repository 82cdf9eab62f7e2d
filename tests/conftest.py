"""Shared fixtures: every test runs isolated from the user's caches and the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every cache/registry at a fresh temp dir and seed the RNGs."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SPSR_HOME", str(home / "spsr"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no accidental network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the checkout (tests may read it; the product never does)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found")
    return SHARED
