"""NSE config: the shipped configs parse, too small a feature map for the negatives is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spsr_cli.model.nse import CONTEXT_OFFSETS
from spsr_cli.train.config import ConfigError
from spsr_cli.train.nse_config import load_nse_config
from spsr_cli.train.nse_tasks import sample_contrastive

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_too_small_a_map_for_the_negatives_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-overlapping negative"):
        load_nse_config(CONFIGS / "nse-tiny.yaml", ["data.crop_size=64"])
    with pytest.raises(ValueError, match="non-overlapping negatives"):
        sample_contrastive(
            np.random.default_rng(0),
            batch=1,
            height=16,
            width=16,
            offsets=CONTEXT_OFFSETS["cross"],
            anchors=100,
            negatives=4,
            min_distance=8,
        )


def test_shipped_nse_configs_parse() -> None:
    p, j = (load_nse_config(CONFIGS / f"nse-{m}.yaml") for m in ("contrastive", "jigsaw"))
    assert (p.task.method, j.task.method) == ("contrastive", "jigsaw")
    assert p.task.temperature == 64.0 and p.train.lr == 1e-3 and p.train.gamma == 0.2
    assert p.model == j.model and p.data == j.data and p.train == j.train
    assert not any("bench" in d or "Set" in d for d in p.data.hr_dirs)  # never a benchmark image
