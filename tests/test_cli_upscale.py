"""The command line end to end, in-process (exit codes, messages, files)."""

import numpy as np
from PIL import Image as PILImage

from spsr_cli.cli.app import run
from spsr_cli.weights.loader import NO_DEFAULT_HELP


def save(path):
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)
    return path


def test_the_shipped_default_model_needs_no_flags(tmp_path):
    save(tmp_path / "p.png")
    assert run(["upscale", str(tmp_path / "p.png")]) == 0
    assert PILImage.open(tmp_path / "p_x4.png").size == (48, 40)


def test_without_weights_explains_how_to_get_them(tmp_path, capsys, monkeypatch):
    import json

    from spsr_cli.weights import manifest

    bare = tmp_path / "weights_manifest.json"
    bare.write_text(json.dumps({"format_version": 1, "default": None, "models": [], "auxiliary": []}))
    monkeypatch.setattr(manifest, "packaged_manifest_path", lambda: bare)
    save(tmp_path / "p.png")
    assert run(["upscale", str(tmp_path / "p.png")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert " ".join(NO_DEFAULT_HELP.split()) in err
    assert "spsr weights import" in err and "--model" in err
    assert not (tmp_path / "p_x4.png").exists()


def test_upscale_file_with_checkpoint(tmp_path, tiny_weights):
    save(tmp_path / "p.png")
    code = run(
        [
            "upscale",
            str(tmp_path / "p.png"),
            "--model",
            str(tiny_weights),
            "-o",
            str(tmp_path / "o.jpg"),
            "--quality",
            "80",
        ]
    )
    assert code == 0
    assert PILImage.open(tmp_path / "o.jpg").size == (48, 40)


def test_partial_failure_exits_1_and_usage_errors_exit_2(tmp_path, tiny_weights, capsys):
    save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    assert run(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights)]) == 1
    assert "b.png" in capsys.readouterr().err
    assert (tmp_path / "out/a_x4.png").exists()
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--suffix", ""]) == 2
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--tile", "big"]) == 2
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--precision", "fp64"]) == 2
    assert run(["upscale", "--no-such-option"]) == 2


def test_torchrun_rank_takes_its_share(tmp_path, tiny_weights, monkeypatch):
    for i in range(4):
        save(tmp_path / f"{i}.png")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1_x4.png", "3_x4.png"]


def test_weights_import_then_upscale_by_name(tmp_path, tiny_weights):
    save(tmp_path / "p.png")
    assert run(["weights", "import", str(tiny_weights), "--name", "tiny", "--licence", "MIT"]) == 0
    assert run(["upscale", str(tmp_path / "p.png"), "--model", "tiny"]) == 0
    assert (tmp_path / "p_x4.png").exists()
    assert run(["upscale", str(tmp_path / "p.png"), "--model", "not-a-model"]) == 2  # a usage error


def test_skip_existing_is_summarised_and_outscale_names_the_output(tmp_path, tiny_weights, capsys):
    for i in range(3):
        save(tmp_path / f"{i}.png")
    args = ["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "--outscale", "2"]
    assert run(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0_x2.png", "1_x2.png", "2_x2.png"]
    capsys.readouterr()
    assert run([*args, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "3 skipped (3 existing, --skip-existing)" in err
    assert "0.png" not in err and err.count("skipped") == 1  # one summary line, not a line per file


# ---------------------------------------------------------------- daily use (issue 18)


def _never_load(monkeypatch):
    """Make any model load fail the test: a rerun with nothing to do must not load one."""
    from spsr_cli.engine import batch

    def refuse(self):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(batch.ModelLoader, "__call__", refuse)


def test_a_finished_in_place_batch_reruns_without_loading_the_model_or_writing(
    tmp_path, tiny_weights, monkeypatch, capsys
):
    for i in range(3):
        save(tmp_path / f"{i}.png")
    args = ["upscale", str(tmp_path), "--model", str(tiny_weights)]
    assert run(args) == 0
    outputs = sorted(tmp_path.glob("*_x4.png"))
    assert [p.name for p in outputs] == ["0_x4.png", "1_x4.png", "2_x4.png"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    capsys.readouterr()
    _never_load(monkeypatch)
    assert run([*args, "--skip-existing"]) == 0  # the outputs beside the inputs are not taken as inputs
    assert "3 skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # nothing written, nothing added


def test_a_plain_rerun_in_place_never_upscales_its_own_outputs(tmp_path, tiny_weights):
    save(tmp_path / "a.png")
    assert run(["upscale", str(tmp_path), "--model", str(tiny_weights)]) == 0
    assert run(["upscale", str(tmp_path / "*.png"), "--model", str(tiny_weights), "--ext", "jpg"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".safetensors")
    assert names == ["a.png", "a_x4.jpg", "a_x4.png"]  # no a_x4_x4.*


def test_a_killed_in_place_batch_resumes(tmp_path, tiny_weights):
    for i in range(3):
        save(tmp_path / f"{i}.png")
    assert run(["upscale", str(tmp_path / "0.png"), "--model", str(tiny_weights)]) == 0  # "killed" after one
    assert run(["upscale", str(tmp_path), "--model", str(tiny_weights), "--skip-existing"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*_x4.png")) == ["0_x4.png", "1_x4.png", "2_x4.png"]


def test_suffix_gets_an_underscore_and_may_not_leave_the_folder(tmp_path, tiny_weights, capsys):
    save(tmp_path / "a.png")
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--suffix", "big"]) == 0
    assert (tmp_path / "a_big.png").is_file()
    sub = tmp_path / "sub"
    sub.mkdir()
    save(sub / "b.png")
    for bad in ("/../../x", "../x", "x/y"):
        assert run(["upscale", str(sub / "b.png"), "--model", str(tiny_weights), "--suffix", bad]) == 2
        assert "--suffix" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".safetensors") == ["a.png", "a_big.png", "sub"]
    assert sorted(p.name for p in sub.iterdir()) == ["b.png"]


def test_a_log_gets_one_line_per_image_and_every_failure_at_the_end(tmp_path, tiny_weights, capsys):
    save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    assert run(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-t", "32"]) == 1
    lines = capsys.readouterr().err.splitlines()
    (line,) = [x for x in lines if "a.png ->" in x]
    assert f"{tmp_path / 'a.png'} -> {tmp_path / 'out/a_x4.png'}, 12x10 -> 48x40, " in line
    assert line.endswith(" s, 1 tile")
    summary = lines.index(next(x for x in lines if "1 written" in x))
    assert any("b.png" in x and "cannot read" in x for x in lines[summary + 1 :])  # listed again under the summary


def test_json_record_of_a_run(tmp_path, tiny_weights):
    import hashlib
    import json

    save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    record = tmp_path / "run.json"
    code = run(
        [
            "upscale",
            str(tmp_path),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_weights),
            "--fp32",
            "--tile",
            "0",
            "--json",
            str(record),
        ]
    )
    assert code == 1
    doc = json.loads(record.read_text())
    assert doc["model"]["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert (doc["device"], doc["precision"], doc["tile"]) == ("cpu", "fp32", None)
    assert doc["backend"] == "torch"  # --backend auto: a tiny image never pays for an OpenVINO conversion
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in doc["images"]}
    assert rows["a.png"]["backend"] == "torch" and rows["b.png"]["backend"] is None
    assert rows["a.png"]["status"] == "written" and rows["a.png"]["output_size"] == [48, 40]
    assert rows["a.png"]["seconds"] >= 0 and rows["a.png"]["output"] == str(tmp_path / "out/a_x4.png")
    assert rows["b.png"]["status"] == "failed" and "cannot read" in rows["b.png"]["reason"]
    assert doc["summary"] == {"written": 1, "skipped": 0, "failed": 1} and doc["exit_code"] == 1


def test_verbose_logs_device_precision_tile_and_model_hash(tmp_path, tiny_weights, capsys):
    import hashlib

    save(tmp_path / "a.png")
    assert (
        run(["-v", "upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--precision", "fp32", "-t", "32"])
        == 0
    )
    err = capsys.readouterr().err
    assert "device cpu, precision fp32, tile 32" in err
    assert hashlib.sha256(tiny_weights.read_bytes()).hexdigest() in err


def test_real_esrgan_short_options(tmp_path, tiny_weights):
    save(tmp_path / "a.png")
    assert (
        run(
            [
                "upscale",
                str(tmp_path / "a.png"),
                "--model",
                str(tiny_weights),
                "-s",
                "2",
                "-t",
                "32",
                "-f",
                "jpg",
                "--fp32",
            ]
        )
        == 0
    )
    assert PILImage.open(tmp_path / "a_x2.jpg").size == (24, 20)
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--fp32", "--precision", "bf16"]) == 2


def test_outscale_must_be_finite_and_a_huge_one_names_the_requested_size(tmp_path, tiny_weights, capsys):
    save(tmp_path / "a.png")
    for bad in ("inf", "nan", "0", "-2"):
        assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--outscale", bad]) == 2, bad
        assert "--outscale" in capsys.readouterr().err
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--outscale", "1e6"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "12000000 x 10000000" in err


def test_an_unwritable_destination_is_refused_before_any_compute(tmp_path, tiny_weights, monkeypatch, capsys):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    _never_load(monkeypatch)
    assert (
        run(
            ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(tiny_weights), "-o", "/proc/x"]
        )
        == 2
    )
    assert "cannot write into /proc" in capsys.readouterr().err


def test_a_fifo_input_is_not_a_regular_file(tmp_path, tiny_weights, capsys):
    import os

    os.mkfifo(tmp_path / "pipe.png")
    assert run(["upscale", str(tmp_path / "pipe.png"), "--model", str(tiny_weights)]) == 2
    err = capsys.readouterr().err
    assert "not a regular file" in err and "does not exist" not in err


def test_an_interrupt_says_what_was_finished_and_how_to_resume(tmp_path, tiny_weights, monkeypatch, capsys):
    from spsr_cli.engine import pipeline

    for i in range(3):
        save(tmp_path / f"{i}.png")
    real, calls = pipeline.upscale_image, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "upscale_image", interrupted)
    assert run(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights)]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "interrupted" in err and "1 of 3 images written" in err and "--skip-existing" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0_x4.png"]  # no claim, no temporary


def test_a_header_that_promises_a_huge_image_is_refused_before_decoding(tmp_path, tiny_weights, monkeypatch, capsys):
    import struct
    import zlib

    from spsr_cli.engine import batch

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # 12000 x 12000 by its header; decoding it would take gigabytes
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 12001 * 4))
        + chunk(b"IEND", b"")
    )
    save(tmp_path / "ok.png")
    decoded = []
    real = batch.read_image
    monkeypatch.setattr(batch, "read_image", lambda path: decoded.append(path.name) or real(path))
    code = run(
        ["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "--max-memory", "1G"]
    )
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "bomb.png" in err and "12000 x 12000 image" in err and "--max-memory" in err
    assert decoded == ["ok.png"] and (tmp_path / "out/ok_x4.png").is_file()


def test_an_input_behind_a_folder_without_search_permission_fails_alone(tmp_path, tiny_weights, monkeypatch, capsys):
    from pathlib import Path

    save(tmp_path / "a.png")
    (tmp_path / "locked").mkdir()
    save(tmp_path / "locked/b.png")
    (tmp_path / "tree/sub").mkdir(parents=True)
    save(tmp_path / "tree/c.png")
    save(tmp_path / "tree/sub/d.png")
    real_stat, real_scandir = Path.stat, __import__("os").scandir

    def stat(self, *args, **kwargs):  # as a non-root user sees a folder without x permission (root sees all)
        if "locked" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    def scandir(path="."):
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr("os.scandir", scandir)
    args = [
        "upscale",
        str(tmp_path / "a.png"),
        str(tmp_path / "locked/b.png"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_weights),
    ]
    assert run(args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "locked/b.png" in err and "Permission denied" in err
    assert (tmp_path / "out/a_x4.png").is_file()
    assert (
        run(["upscale", str(tmp_path / "tree"), "-r", "-o", str(tmp_path / "out2"), "--model", str(tiny_weights)]) == 0
    )
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot read the folder" in err and "sub" in err
    assert sorted(p.name for p in (tmp_path / "out2").rglob("*.png")) == ["c_x4.png"]


def test_an_esrgan_family_checkpoint_upscales_as_is(tmp_path):
    import torch

    from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig

    net = RRDBNet(config=RRDBNetConfig(nf=8, nb=1, gc=4, scale=2, unshuffle=2))  # Real-ESRGAN's x2 layout
    torch.save({"params_ema": net.state_dict()}, tmp_path / "RealESRGAN_x2plus.pth")
    save(tmp_path / "p.png")
    assert run(["upscale", str(tmp_path / "p.png"), "--model", str(tmp_path / "RealESRGAN_x2plus.pth")]) == 0
    assert PILImage.open(tmp_path / "p_x2.png").size == (24, 20)


def test_backend_openvino_runs_and_is_reported(tmp_path, openvino_home, monkeypatch, caplog):
    import json
    import logging
    import shutil

    import torch
    from conftest import make_rrdbnet

    from spsr_cli.weights.store import write_generator_file

    shutil.copytree(openvino_home, tmp_path / "home")  # the model is converted already (the session's cache)
    monkeypatch.setenv("SPSR_HOME", str(tmp_path / "home"))
    model = make_rrdbnet()
    weights = tmp_path / "rrdb.safetensors"
    write_generator_file(weights, model.state_dict(), model.config, source="test", licence="MIT", dtype=torch.float32)
    save(tmp_path / "p.png")
    args = ["upscale", str(tmp_path / "p.png"), "-m", str(weights), "--fp32", "--json", str(tmp_path / "r.json")]
    with caplog.at_level(logging.DEBUG, logger="spsr_cli"):
        assert run(["-v", *args, "--backend", "openvino"]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["backend"] == "openvino" and doc["images"][0]["backend"] == "openvino"
    assert "image: openvino" in caplog.text  # -v names the backend that ran
    ov = np.asarray(PILImage.open(tmp_path / "p_x4.png"), dtype=float)
    assert run([*args, "--backend", "torch", "-o", str(tmp_path / "t.png")]) == 0
    reference = np.asarray(PILImage.open(tmp_path / "t.png"), dtype=float)
    assert np.abs(ov - reference).max() <= 1  # the same image, to rounding


def test_backend_usage_errors(tmp_path, tiny_weights, monkeypatch, capsys):
    from spsr_cli.engine import openvino_runtime

    save(tmp_path / "p.png")
    args = ["upscale", str(tmp_path / "p.png"), "-m", str(tiny_weights)]
    assert run([*args, "--backend", "onnx"]) == 2
    assert "--backend 'onnx' is not understood" in capsys.readouterr().err
    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: False)
    assert run([*args, "--backend", "openvino"]) == 2
    assert "spsr-cli[openvino]" in capsys.readouterr().err
    assert not (tmp_path / "p_x4.png").exists()


def _local_family(tmp_path):
    """Two local registry models of one family, x4 and x2 (tiny SRVGGNetCompacts)."""
    import json

    import torch

    from spsr_cli.files import sha256_file
    from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact
    from spsr_cli.weights.manifest import local_manifest_path
    from spsr_cli.weights.store import write_generator_file

    models = []
    for scale in (4, 2):
        config = SRVGGConfig(nf=4, num_conv=1, scale=scale)
        path = tmp_path / f"fam-x{scale}.safetensors"
        write_generator_file(
            path, SRVGGNetCompact(config=config).state_dict(), config, source="t", licence="MIT", dtype=torch.float32
        )
        models.append(
            {
                "name": f"fam-x{scale}",
                "architecture": "srvgg",
                "config": config.to_dict(),
                "family": "fam",
                "sha256": sha256_file(path),
                "size": path.stat().st_size,
                "source": {"type": "file", "path": str(path)},
            }
        )
    local_manifest_path().parent.mkdir(parents=True, exist_ok=True)
    local_manifest_path().write_text(json.dumps({"format_version": 1, "default": None, "models": models}))


def test_an_x2_model_writes_name_x2_at_twice_the_size_and_s_picks_the_native_scale(tmp_path, capsys):
    _local_family(tmp_path)
    save(tmp_path / "p.png")
    assert run(["upscale", str(tmp_path / "p.png"), "-m", "fam-x2"]) == 0
    assert PILImage.open(tmp_path / "p_x2.png").size == (24, 20)
    (tmp_path / "p_x2.png").unlink()
    capsys.readouterr()
    assert run(["upscale", str(tmp_path / "p.png"), "-m", "fam-x4", "-s", "2", "--json", str(tmp_path / "r.json")]) == 0
    assert "-s 2: using fam-x2, the x2 model of fam-x4's family" in " ".join(capsys.readouterr().err.split())
    assert PILImage.open(tmp_path / "p_x2.png").size == (24, 20)
    assert "fam-x2" in (tmp_path / "r.json").read_text()
    assert run(["upscale", str(tmp_path / "p.png"), "-m", "fam-x4", "-s", "3"]) == 0  # no x3 sibling: resized
    assert PILImage.open(tmp_path / "p_x3.png").size == (36, 30)


# ---------------------------------------------------------------- video (issue 27)


def test_a_video_and_an_image_in_one_run_with_a_json_record(tmp_path, tiny_weights, capsys, one_thread):
    import hashlib
    import json

    import pytest

    pytest.importorskip("av")
    from videoclips import make_clip, packets

    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    save(tmp_path / "p.png")
    args = ["upscale", str(clip), str(tmp_path / "p.png"), "--model", str(tiny_weights), "--device", "cpu"]
    assert run([*args, "--json", str(tmp_path / "run.json"), "--preset", "veryfast"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"{clip} -> {tmp_path / 'clip_x4.mp4'}, 64x48 -> 256x192, 4 frames" in err
    )  # one line per video off a terminal
    assert "videos: 1 written, 0 skipped, 0 failed" in err and "1 written, 0 skipped, 0 failed" in err
    record = json.loads((tmp_path / "run.json").read_text())
    (entry,) = record["videos"]
    assert entry["status"] == "written" and entry["frames"] == 4 and entry["output_size"] == [256, 192]
    assert entry["codecs"] == {"video": "h264 -> h264 (crf 18)", "audio": ["aac copied"]} and entry["fps"] > 0
    assert entry["seconds"] > 0 and entry["output_bytes"] == (tmp_path / "clip_x4.mp4").stat().st_size
    assert record["images"][0]["status"] == "written" and record["exit_code"] == 0
    assert record["summary"]["written"] == 1 and record["video_summary"] == {"written": 1, "skipped": 0, "failed": 0}
    (used,) = record["models"]  # issue 26's record: the one model described once, its one-off costs apart
    assert used["sha256"] == record["model"]["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert used["architecture"] == "spsr" and used["load_seconds"] > 0 and used["warm_up_seconds"] > 0
    assert (record["device"], record["backend"]) == ("cpu", "torch") and record["versions"]["torch"]
    assert "model" not in entry and set(entry) >= {"input", "output", "status", "reason", "input_size", "output_size"}
    assert packets(tmp_path / "clip_x4.mp4", "audio") == packets(clip, "audio")
    assert run([*args, "--skip-existing"]) == 0
    assert "videos: 0 written, 1 skipped" in " ".join(capsys.readouterr().err.split())


def test_video_names_are_never_read_as_markup(tmp_path, tiny_weights, capsys, monkeypatch, one_thread):
    """Issue 26 defect 1 for videos: names such as ``m[/b]clip.mp4`` and ``[red]clip.mp4`` are shown as they
    are, in the one line per video off a terminal, in the frames bar on one, and in a failure."""
    import io

    import pytest
    from rich.console import Console

    pytest.importorskip("av")
    from videoclips import make_clip

    from spsr_cli.cli import upscale as cli_upscale

    (tmp_path / "m[").mkdir()
    clip = make_clip(tmp_path / "m[" / "b]clip.mp4", seconds=0.25, audio=None)
    red = clip.rename(tmp_path / "[red]clip.mp4")
    clip = make_clip(clip, seconds=0.25, audio=None)
    (tmp_path / "m[" / "i]bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(200)))
    args = ["upscale", str(clip), "--model", str(tiny_weights), "--device", "cpu", "-o", str(tmp_path / "out")]
    assert run([*args, str(tmp_path / "m[" / "i]bad.mp4")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{clip} -> {tmp_path / 'out' / 'b]clip_x4.mp4'}" in err and "m[/i]bad.mp4" in err
    terminal = io.StringIO()
    monkeypatch.setattr(cli_upscale, "console", Console(file=terminal, force_terminal=True, width=200))
    assert run(["upscale", str(red), "--model", str(tiny_weights), "--device", "cpu"]) == 0
    assert "video: [red]clip.mp4" in terminal.getvalue()


def test_video_options_are_checked_before_any_work(tmp_path, tiny_weights, capsys):
    save(tmp_path / "p.png")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(16))
    base = ["upscale", str(tmp_path / "clip.mp4"), "--model", str(tiny_weights)]
    assert run([*base, "--frames", "9:2"]) == 2
    assert run([*base, "--video-codec", "mpeg2"]) == 2
    assert run([*base, "-o", str(tmp_path / "out.webm"), "--video-codec", "h264"]) == 2
    assert run(["upscale", str(tmp_path / "p.png"), "--model", str(tiny_weights), "--crf", "20"]) == 2
    assert "apply to videos" in capsys.readouterr().err
    assert not list(tmp_path.glob("*_x4*"))


def test_a_broken_video_fails_alone_and_without_pyav_names_the_install(tmp_path, tiny_weights, monkeypatch, capsys):
    import sys

    save(tmp_path / "p.png")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(200)))
    args = ["upscale", str(tmp_path / "clip.mp4"), str(tmp_path / "p.png"), "--model", str(tiny_weights)]
    installed = sys.modules.get("av")
    monkeypatch.setitem(sys.modules, "av", None)  # import av fails
    assert run(args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert 'pip install "spsr-cli[video]"' in err and "videos: 0 written, 0 skipped, 1 failed" in err
    assert (tmp_path / "p_x4.png").exists() and not (tmp_path / "clip_x4.mp4").exists()
    if installed is not None:
        monkeypatch.setitem(sys.modules, "av", installed)
        assert run([*args, "--skip-existing"]) == 1
        assert "clip.mp4: not a readable video" in " ".join(capsys.readouterr().err.split())


def test_a_killed_video_run_leaves_no_output_and_the_rerun_starts_again(tmp_path, tiny_weights, one_thread):
    import os
    import pathlib
    import signal
    import subprocess
    import sys
    import time

    import pytest

    pytest.importorskip("av")
    from videoclips import FPS, frames, make_clip

    clip = make_clip(tmp_path / "clip.mp4", seconds=4)
    args = ["upscale", str(clip), "--model", str(tiny_weights), "--fp32", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "spsr_cli", *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".clip_x4.mp4.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-video: the temporary exists, the output does not
    proc.wait()
    assert not (tmp_path / "clip_x4.mp4").exists()
    assert list(tmp_path.glob(".clip_x4.mp4.*"))  # what a killed writer leaves: its temporary and claim
    assert run(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_x4.mp4", "tiny.safetensors"]
    assert len(frames(tmp_path / "clip_x4.mp4")) == 4 * FPS


def test_an_interrupted_video_says_it_starts_again(tmp_path, tiny_weights, monkeypatch, capsys):
    import pytest

    pytest.importorskip("av")
    from videoclips import make_clip

    from spsr_cli.engine import pipeline

    clip = make_clip(tmp_path / "clip.mkv", seconds=0.5)
    real, calls = pipeline.upscale_image, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "upscale_image", interrupted)
    assert run(["upscale", str(clip), "--model", str(tiny_weights), "--device", "cpu"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "0 of 1 videos written" in err and "starts again from its first frame" in err and "--skip-existing" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "tiny.safetensors"]


# ---------------------------------------------------------------- issue 26: hostile names and paths


def test_file_names_are_never_read_as_markup(tmp_path, tiny_weights, capsys):
    """Defect 1: ``m[/b]ok.png`` (a folder ``m[`` holding ``b]ok.png``) raised rich's MarkupError while its
    line was printed; in a batch that killed the rest of it and the --json record; ``nope[/x].png`` exited 1
    instead of 2. Low: ``photo[final]`` was shown as ``photo`` and ``:thumbs_up:`` as an emoji."""
    import json

    batch = tmp_path / "m["
    batch.mkdir()
    save(batch / "b]ok.png")
    out = tmp_path / "o.png"
    assert run(["upscale", str(batch / "b]ok.png"), "--model", str(tiny_weights), "-o", str(out)]) == 0
    assert "m[/b]ok.png" in capsys.readouterr().err
    for name in ("photo[final].png", "z.png"):
        save(batch / name)
    (batch / "i]nope :thumbs_up:.png").write_bytes(b"broken")
    record = tmp_path / "r[" / "i].json"
    args = ["upscale", str(batch), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "--json", str(record)]
    assert run(args) == 1
    err = capsys.readouterr().err
    assert "m[/i]nope :thumbs_up:.png" in err and "photo[final].png" in err and "r[/i].json" in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["b]ok_x4.png", "photo[final]_x4.png", "z_x4.png"]
    assert json.loads(record.read_text())["summary"] == {"written": 3, "skipped": 0, "failed": 1}
    assert run(["upscale", str(tmp_path / "nope[" / "x].png"), "--model", str(tiny_weights)]) == 2
    assert "nope[/x].png" in capsys.readouterr().err


def test_names_too_long_for_the_file_system_fail_alone_or_as_usage_errors(tmp_path, tiny_weights, capsys):
    """Defect 3: a 255-byte name upscaled in place, a 300-character --suffix or -o name raised OSError
    "File name too long" while planning, aborting the whole batch before any work."""
    long_name = "a" * 251 + ".png"  # 255 bytes: its output a..a_x4.png has 258
    save(tmp_path / long_name)
    save(tmp_path / "ok.png")
    assert run(["upscale", str(tmp_path), "--model", str(tiny_weights)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "258 bytes, more than the 255" in err and "1 written" in err
    assert (tmp_path / "ok_x4.png").exists()
    one = str(tmp_path / "ok.png")
    assert run(["upscale", one, "--model", str(tiny_weights), "--suffix", "s" * 300]) == 2
    assert "choose a shorter --suffix" in capsys.readouterr().err
    assert run(["upscale", one, "--model", str(tiny_weights), "-o", str(tmp_path / ("o" * 300 + ".png"))]) == 2
    assert "choose a shorter -o" in capsys.readouterr().err
    assert run(["upscale", str(tmp_path), "--model", str(tiny_weights), "-o", str(tmp_path / ("d" * 300))]) == 2


def test_the_json_path_is_checked_before_any_work(tmp_path, tiny_weights, capsys):
    """Issue 26 (low): a bad --json path was found only after every image was done."""
    save(tmp_path / "p.png")
    (tmp_path / "folder").mkdir()
    for bad in ("/proc/nope/r.json", str(tmp_path / "folder")):
        assert run(["upscale", str(tmp_path / "p.png"), "--model", str(tiny_weights), "--json", bad]) == 2
        assert "--json" in capsys.readouterr().err
        assert not (tmp_path / "p_x4.png").exists()


def test_a_tile_too_small_to_pay_is_a_usage_error(tmp_path, tiny_weights, capsys):
    """Defect 10: ``--tile 1`` ran 256 tiles each computing the whole 16-pixel image (228 s instead of 0.31 s)."""
    save(tmp_path / "p.png")
    for tile, waste in (("1", "1089 times"), ("31", "4 times")):
        assert run(["upscale", str(tmp_path / "p.png"), "--model", str(tiny_weights), "--tile", tile]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"--tile {tile} is below 32 pixels" in err and waste in err
    assert not (tmp_path / "p_x4.png").exists()
    for tile in ("32", "0", "auto"):
        assert (
            run(
                [
                    "upscale",
                    str(tmp_path / "p.png"),
                    "--model",
                    str(tiny_weights),
                    "-t",
                    tile,
                    "-o",
                    str(tmp_path / f"o{tile}.png"),
                ]
            )
            == 0
        )


def test_an_output_folder_inside_the_input_folder_is_never_taken_as_input(tmp_path, tiny_weights, capsys):
    """Defect 11: ``spsr upscale p -r -o p/up`` run again (or with --skip-existing) exited 2, "would overwrite
    the input image": the earlier outputs were taken as inputs. Low: without -r sub-folders were left out silently."""
    photos = tmp_path / "p"
    (photos / "sub").mkdir(parents=True)
    save(photos / "a.png")
    save(photos / "sub/b.png")
    args = ["upscale", str(photos), "-r", "-o", str(photos / "up"), "--model", str(tiny_weights)]
    for extra in ([], [], ["--skip-existing"]):
        assert run([*args, *extra]) == 0
    written = sorted(str(p.relative_to(photos)) for p in (photos / "up").rglob("*.png"))
    assert written == ["up/a_x4.png", "up/sub/b_x4.png"]
    capsys.readouterr()
    assert run(["upscale", str(photos), "-o", str(tmp_path / "flat"), "--model", str(tiny_weights)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "2 sub-folders (sub, up) left out; pass --recursive" in err
    assert [p.name for p in (tmp_path / "flat").iterdir()] == ["a_x4.png"]


def test_only_an_animated_gif_is_called_animated(tmp_path, tiny_weights, capsys):
    """Issue 26 (low): a single-frame GIF without --ext was called "an animated image"."""
    PILImage.new("RGB", (12, 10)).save(tmp_path / "still.gif")
    frames = [PILImage.new("RGB", (12, 10), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    assert (
        run(["upscale", str(tmp_path / "still.gif"), str(tmp_path / "moving.gif"), "--model", str(tiny_weights)]) == 1
    )
    lines = [" ".join(x.split()) for x in capsys.readouterr().err.splitlines() if "failed" in x]
    assert any("still.gif" in x and "--ext png" in x and "animated image" not in x for x in lines)
    assert any("moving.gif" in x and "an animated image: its first frame" in x for x in lines)


def test_a_file_name_with_a_newline_stays_on_its_log_line(tmp_path, tiny_weights, capsys):
    """Issue 26 (low): a file name holding a newline split the one-line-per-image log."""
    save(tmp_path / "a\nb.png")
    assert run(["upscale", str(tmp_path / "a\nb.png"), "--model", str(tiny_weights)]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if " -> " in x and "x40" in x]
    assert "a\\nb.png -> " in line and "a\\nb_x4.png, 12x10 -> 48x40" in line


def test_a_json_record_of_model_auto_names_the_model_and_sha256_behind_each_output(tmp_path, tiny_weights, monkeypatch):
    """Issue 26: with --model auto the record said {"name": "auto", "path": null, "sha256": null} and no row
    said which model made which file; now each image names its model, version, sha256 and the reason, and
    each model's one-off costs (load, warm-up) are recorded apart from the images' times."""
    import json

    from spsr_cli.engine import model_choice
    from spsr_cli.weights.manifest import load_manifest

    assert run(["weights", "import", str(tiny_weights), "--name", "jpegish"]) == 0
    monkeypatch.setattr(model_choice, "JPEG_MODEL", "jpegish")
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "phone.jpg", quality=30)
    save(tmp_path / "clean.png")
    record = tmp_path / "r.json"
    args = ["upscale", str(tmp_path / "phone.jpg"), str(tmp_path / "clean.png"), "--model", "auto"]
    assert run([*args, "-o", str(tmp_path / "out"), "--json", str(record), "--fp32"]) == 0
    doc = json.loads(record.read_text())
    manifest = load_manifest()
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in doc["images"]}
    jpeg, png = rows["phone.jpg"]["model"], rows["clean.png"]["model"]
    assert (jpeg["name"], jpeg["sha256"]) == ("jpegish", manifest.models["jpegish"].sha256)
    assert "JPEG of estimated quality" in jpeg["reason"] and "< 96" in jpeg["reason"]
    default = manifest.models[manifest.default]
    assert (png["name"], png["version"], png["sha256"]) == (default.name, default.version, default.sha256)
    assert png["reason"] == "not a JPEG"
    assert doc["model"]["name"] == "auto" and "jpegish" in doc["model"]["rule"]
    used = {m["name"]: m for m in doc["models"]}
    assert set(used) == {"jpegish", default.name}
    for m in used.values():
        assert m["load_seconds"] > 0 and m["warm_up_seconds"] > 0 and m["architecture"] == "spsr"
    assert (doc["device"], doc["precision"], doc["backend"]) == ("cpu", "fp32", "torch")
    assert doc["versions"]["torch"] and doc["versions"]["spsr-cli"]


def test_a_json_record_of_one_model_describes_it(tmp_path, tiny_weights):
    """Issue 26: with the default model "name" was null; now name, version, sha256, architecture and config."""
    import hashlib
    import json

    save(tmp_path / "a.png")
    record = tmp_path / "r.json"
    assert run(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--json", str(record)]) == 0
    doc = json.loads(record.read_text())
    (used,) = doc["models"]
    assert doc["model"]["sha256"] == used["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert used["architecture"] == "spsr" and used["config"]["nf"] == 8 and used["path"] == str(tiny_weights)
    assert used["load_seconds"] > 0 and used["warm_up_seconds"] > 0
    assert doc["images"][0]["seconds"] > 0 and "model" not in doc["images"][0]


def test_progress_bars_count_right_on_a_terminal(tmp_path, tiny_weights, monkeypatch):
    """Issue 26 (low): the images bar lagged one image; the tiles bar jumped from 0/1 to 1/9."""
    import io

    import rich.progress
    from rich.console import Console

    from spsr_cli.cli import upscale as cli_upscale

    monkeypatch.setattr(cli_upscale, "console", Console(file=io.StringIO(), force_terminal=True, width=120))
    seen: list[tuple[str, object, object]] = []
    update, reset = rich.progress.Progress.update, rich.progress.Progress.reset

    def record_update(self, task, **kw):
        seen.append((self._tasks[task].description if task in self._tasks else "?", kw.get("completed"), kw))
        return update(self, task, **kw)

    def record_reset(self, task, **kw):
        seen.append(("reset", kw.get("completed"), kw))
        return reset(self, task, **kw)

    monkeypatch.setattr(rich.progress.Progress, "update", record_update)
    monkeypatch.setattr(rich.progress.Progress, "reset", record_reset)
    for name in ("a", "b", "c"):
        save(tmp_path / f"{name}.png")
    assert run(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-t", "32"]) == 0
    starts = [kw for what, _, kw in seen if str(kw.get("description", "")).startswith("images: ")]
    assert [kw["description"] for kw in starts] == ["images: a.png", "images: b.png", "images: c.png"]
    before_start, latest = [], None
    for what, completed, kw in seen:
        if str(kw.get("description", "")).startswith("images: "):
            before_start.append(latest)
        elif what.startswith("images") and completed is not None:
            latest = completed
    assert before_start == [0, 1, 2] and latest == 3  # b starts with a counted done, c with a and b
    assert all(kw["total"] is None for what, _, kw in seen if what == "reset")  # no "0/1" before the first tile
