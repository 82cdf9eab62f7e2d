import json

import pytest
import torch
from safetensors import safe_open

from spsr_cli import load_generator
from spsr_cli.errors import ChecksumMismatchError, NameTakenError, UnknownModelError, WeightsNotAvailableError
from spsr_cli.weights.loader import NO_DEFAULT_HELP, resolve_weights
from spsr_cli.weights.manifest import load_manifest
from spsr_cli.weights.store import import_checkpoint, write_generator_file


def test_written_file_carries_config_and_provenance(tiny_weights, tiny_model):
    with safe_open(str(tiny_weights), framework="pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["config"]) == tiny_model.config.to_dict()
    assert meta["scale"] == "4" and meta["licence"] == "MIT" and meta["source"] == "test"
    loaded = load_generator(tiny_weights)
    assert not loaded.training
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x).sr, tiny_model(x).sr)


def test_float16_export_is_half_size(tmp_path, tiny_model, tiny_weights):
    half = tmp_path / "half.safetensors"
    write_generator_file(half, tiny_model.state_dict(), tiny_model.config, source="t", licence="MIT")
    assert half.stat().st_size < 0.6 * tiny_weights.stat().st_size
    assert load_generator(half).conv_first.weight.dtype == torch.float32


def test_import_pth_registers_by_name(tmp_path, tiny_model):
    pth = tmp_path / "ckpt.pth"
    torch.save({"params_ema": tiny_model.state_dict()}, pth)
    entry = import_checkpoint(pth, name="mine", licence="CC-BY-4.0")
    assert entry.origin == "local" and entry.licence == "CC-BY-4.0"
    model = load_generator("mine")
    x = torch.rand(1, 3, 6, 6)
    assert torch.allclose(model(x).sr, tiny_model(x).sr)
    with pytest.raises(NameTakenError, match="exists already"):
        import_checkpoint(pth, name="mine")
    assert import_checkpoint(pth, name="mine", replace=True).name == "mine"


def test_registered_file_that_changed_is_refused(tmp_path, tiny_model):
    pth = tmp_path / "ckpt.pth"
    torch.save(tiny_model.state_dict(), pth)
    entry = import_checkpoint(pth, name="changing")
    with open(entry.source.path, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ChecksumMismatchError, match="damaged or replaced"):
        load_generator("changing")


def test_no_default_model_says_how_to_get_weights():
    from spsr_cli.weights.manifest import Manifest

    assert load_manifest().default == "spsr-x4"  # shipped; a registry without one explains what to do
    with pytest.raises(WeightsNotAvailableError) as err:
        resolve_weights(None, manifest=Manifest())
    assert str(err.value) == NO_DEFAULT_HELP
    assert "spsr weights import" in NO_DEFAULT_HELP


def test_missing_path_and_unknown_extension(tmp_path):
    with pytest.raises(UnknownModelError, match="does not exist"):  # a usage error: exit code 2
        resolve_weights(str(tmp_path / "nope.pth"))
    odd = tmp_path / "w.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(UnknownModelError, match="unsupported checkpoint extension"):
        load_generator(odd)


# ---------------------------------------------------------------- hardening (issue 10)

import argparse  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import stat  # noqa: E402

from spsr_cli.errors import CheckpointMismatchError  # noqa: E402
from spsr_cli.weights.store import read_weights_file  # noqa: E402


def _as_unprivileged(fn):
    """Run ``fn`` as an unprivileged user (root reads any file): in a forked child when we are root."""
    if os.geteuid() != 0:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                result = fn()
            except BaseException as err:  # noqa: BLE001 - handed to the parent
                result = err
            os.write(write, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_at_load_and_import(tmp_path, tiny_model, bad):
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    state["fusion.out.bias"][1] = bad
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"'fusion.out.bias' holds 1 NaN/Inf"):
        load_generator(path)
    with pytest.raises(CheckpointMismatchError, match="fusion.out.bias"):
        import_checkpoint(path, name="broken")
    assert "broken" not in load_manifest().models
    with pytest.raises(CheckpointMismatchError, match="fusion.out.bias"):  # nor can training export them
        write_generator_file(tmp_path / "x.safetensors", state, tiny_model.config, source="t", licence="MIT")
    assert not (tmp_path / "x.safetensors").exists()


def test_a_training_checkpoint_names_the_export_command(tmp_path, tiny_model):
    path = tmp_path / "step_00000010.pt"
    torch.save(
        {"format_version": 1, "step": 10, "model": tiny_model.state_dict(), "ema": tiny_model.state_dict()}, path
    )
    with pytest.raises(UnknownModelError, match=r"training checkpoint \(step 10\).*spsr train export"):
        load_generator(path)


def test_a_run_folder_as_model_says_to_export_it(tmp_path):
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    with pytest.raises(UnknownModelError, match="is a folder.*spsr train export") as err:
        resolve_weights(str(tmp_path / "run"))
    assert "does not exist" not in str(err.value)


def test_a_pickle_is_refused_without_suggesting_weights_only_false(tmp_path, tiny_model):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": tiny_model.state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        read_weights_file(path)
    message = str(err.value)
    assert "argparse.Namespace" in message and "could run code" in message
    assert "weights_only" not in message and "False" not in message


def test_an_unreadable_file_is_reported_as_unreadable(tiny_weights):
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="spsr-unreadable-"))  # reachable by the other user, unlike tmp_path
    try:
        folder.chmod(0o755)
        path = Path(shutil.copy(tiny_weights, folder / "w.safetensors"))
        path.chmod(0)
        outcome = _as_unprivileged(lambda: read_weights_file(path))
    finally:
        shutil.rmtree(folder)
    assert isinstance(outcome, WeightsNotAvailableError), outcome
    assert "cannot read the weights file" in str(outcome) and "Permission denied" in str(outcome)
    assert "No such file" not in str(outcome)


def test_a_damaged_registered_file_is_not_advised_to_be_imported_again(tmp_path, tiny_model):
    original = tmp_path / "orig.pth"
    torch.save(tiny_model.state_dict(), original)
    entry = import_checkpoint(original, name="mine")
    stored = entry.source.path
    with open(stored, "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\0\0\0")
    with pytest.raises(ChecksumMismatchError) as err:
        resolve_weights("mine")
    message = str(err.value)
    assert str(original.resolve()) in message and "--name mine --force" in message
    assert "import it again under a new name" not in message


def test_weight_files_and_registry_follow_the_umask(tmp_path, tiny_model):
    original = tmp_path / "orig.pth"
    torch.save(tiny_model.state_dict(), original)
    old = os.umask(0o022)
    try:
        entry = import_checkpoint(original, name="shared")
    finally:
        os.umask(old)
    from spsr_cli.weights.manifest import local_manifest_path

    for path in (entry.source.path, local_manifest_path()):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


def test_an_esrgan_checkpoint_imports_as_an_rrdbnet(tmp_path):
    from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig
    from spsr_cli.weights.manifest import load_manifest

    net = RRDBNet(config=RRDBNetConfig(nf=8, nb=1, gc=4)).eval()
    rename = {
        "conv_first": "model.0",
        "conv_body": "model.1.sub.1",
        "conv_up1": "model.3",
        "conv_up2": "model.6",
        "conv_hr": "model.8",
        "conv_last": "model.10",
    }
    sd = {}
    for key, value in net.state_dict().items():
        head, param = key.rsplit(".", 1)
        if head.startswith("body."):
            _, i, rdb, conv = head.split(".")
            sd[f"model.1.sub.{i}.{rdb.upper()}.{conv}.0.{param}"] = value
        else:
            sd[f"{rename[head]}.{param}"] = value
    pth = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(sd, pth)
    entry = import_checkpoint(pth, name="esrgan", licence="Apache-2.0")
    assert entry.architecture == "rrdbnet" and entry.config == net.config
    assert load_manifest().models["esrgan"].config == net.config  # the local registry keeps the architecture
    x = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        assert torch.equal(load_generator("esrgan")(x), net(x))


@pytest.mark.parametrize("claim", [{"nf": 10**9}, {"nb": 3000}, {"scale": 8}])
def test_a_stored_config_that_lies_about_the_tensors_is_refused_before_any_build(
    tmp_path, tiny_model, claim, monkeypatch
):
    """Issue 26, defect 6: a file whose stored config claimed nf = 10**9 (or nb = 3000) built the network from
    it before checking the tensors: 108 GB asked for, or seconds and memory without bound."""
    from spsr_cli.files import read_safetensors, save_safetensors_atomic
    from spsr_cli.model import architectures
    from spsr_cli.weights.store import load_weights_file, write_generator_file

    path = tmp_path / "w.safetensors"
    write_generator_file(path, tiny_model.state_dict(), tiny_model.config, source="t", licence="MIT")
    tensors, metadata = read_safetensors(path)
    metadata["config"] = json.dumps({**json.loads(metadata["config"]), **claim})
    save_safetensors_atomic(path, tensors, metadata)
    monkeypatch.setattr(architectures.SPSRNet, "__init__", lambda *a, **k: pytest.fail("built a network"))
    ((name, value),) = claim.items()
    with pytest.raises(CheckpointMismatchError, match=f"{name}={value} \\(its tensors say"):
        load_weights_file(path)


@pytest.mark.parametrize(
    "architecture, claim",
    [
        ("srvgg", {"nf": 10**6}),
        ("srvgg", {"num_conv": 5000}),
        ("srvgg", {"scale": 4}),
        ("dat", {"nf": 16000}),
        ("dat", {"depth": 3000}),
        ("dat", {"groups": 500}),
        ("dat", {"ffn_channels": 10**6}),
        ("dat", {"heads": 4}),
        ("dat", {"window_long": 4096}),
    ],
)
def test_a_compact_or_dat_file_whose_config_lies_is_refused_before_any_build(
    tmp_path, architecture, claim, monkeypatch
):
    """Issue 26's defect 6 for the issue 25 architectures: a stored nf = 10**6 asked for 36 TB, depth = 3000
    built for minutes; the window shape (not fixed by any tensor) is bounded instead."""
    from spsr_cli.errors import CheckpointMismatchError
    from spsr_cli.files import read_safetensors, save_safetensors_atomic
    from spsr_cli.model.dat import DAT, DATConfig
    from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact
    from spsr_cli.weights.store import load_weights_file

    cls, config = {
        "srvgg": (SRVGGNetCompact, SRVGGConfig(nf=4, num_conv=1, scale=2)),
        "dat": (DAT, DATConfig(nf=16, depth=2, heads=2, ffn_channels=8, window_short=4, window_long=8, scale=2)),
    }[architecture]
    path = tmp_path / "w.safetensors"
    write_generator_file(path, cls(config=config).state_dict(), config, source="t", licence="MIT")
    tensors, metadata = read_safetensors(path)
    metadata["config"] = json.dumps({**json.loads(metadata["config"]), **claim})
    save_safetensors_atomic(path, tensors, metadata)
    monkeypatch.setattr(cls, "__init__", lambda *a, **k: pytest.fail("built a network"))
    ((name, value),) = claim.items()
    expected = "more than 1024" if name == "window_long" else f"{name}={value} \\(its tensors say"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_weights_file(path)
