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
    code = run(["upscale", str(tmp_path / "p.png"), "--model", str(tiny_weights), "-o", str(tmp_path / "o.jpg"), "--quality", "80"])
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


def test_an_esrgan_family_checkpoint_upscales_as_is(tmp_path):
    import torch

    from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig

    net = RRDBNet(config=RRDBNetConfig(nf=8, nb=1, gc=4, scale=2, unshuffle=2))  # Real-ESRGAN's x2 layout
    torch.save({"params_ema": net.state_dict()}, tmp_path / "RealESRGAN_x2plus.pth")
    save(tmp_path / "p.png")
    assert run(["upscale", str(tmp_path / "p.png"), "--model", str(tmp_path / "RealESRGAN_x2plus.pth")]) == 0
    assert PILImage.open(tmp_path / "p_x2.png").size == (24, 20)
