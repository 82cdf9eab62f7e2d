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
    assert run(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-t", "8"]) == 1
    lines = capsys.readouterr().err.splitlines()
    (line,) = [x for x in lines if "a.png ->" in x]
    assert f"{tmp_path / 'a.png'} -> {tmp_path / 'out/a_x4.png'}, 12x10 -> 48x40, " in line
    assert line.endswith(" s, 4 tiles")
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
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in doc["images"]}
    assert rows["a.png"]["status"] == "written" and rows["a.png"]["output_size"] == [48, 40]
    assert rows["a.png"]["seconds"] >= 0 and rows["a.png"]["output"] == str(tmp_path / "out/a_x4.png")
    assert rows["b.png"]["status"] == "failed" and "cannot read" in rows["b.png"]["reason"]
    assert doc["summary"] == {"written": 1, "skipped": 0, "failed": 1} and doc["exit_code"] == 1


def test_verbose_logs_device_precision_tile_and_model_hash(tmp_path, tiny_weights, capsys):
    import hashlib

    save(tmp_path / "a.png")
    assert (
        run(["-v", "upscale", str(tmp_path / "a.png"), "--model", str(tiny_weights), "--precision", "fp32", "-t", "8"])
        == 0
    )
    err = capsys.readouterr().err
    assert "device cpu, precision fp32, tile 8" in err
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
                "8",
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
