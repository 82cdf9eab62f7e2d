from spsr_cli import __version__
from spsr_cli.cli.app import run


def test_version_and_help(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spsr-cli {__version__}"  # stdout: it is the output
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("upscale", "eval", "weights", "train"))


def test_unknown_command_is_a_usage_error():
    assert run(["enlarge"]) == 2


def test_bare_train_is_a_usage_error_like_bare_spsr(capsys):
    assert run([]) == 2
    assert run(["train"]) == 2
    assert "--config" in capsys.readouterr().out


def test_messages_are_not_wrapped_when_stderr_is_not_a_terminal(tmp_path, capsys):
    import logging

    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "missing-image-file.png"
    assert run(["upscale", str(deep)]) == 2
    err = capsys.readouterr().err
    assert str(deep) in err and len(err.splitlines()[0]) > 120
    logging.getLogger("spsr_cli.test").warning("see %s for details", deep)
    logged = capsys.readouterr().err
    assert logged == f"warning: see {deep} for details\n"


def test_help_and_version_never_import_torch():
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from spsr_cli.cli.app import run\n"
        "codes = [run(a.split()) for a in ('--help', '--version', 'upscale --help', 'eval --help', "
        "'weights list --help', 'weights import --help', 'train --help', 'train export --help')]\n"
        "print(codes, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "[0, 0, 0, 0, 0, 0, 0, 0] False", done.stderr


def test_help_shows_no_bool_type_for_flags_and_offers_completion(capsys):
    assert run(["upscale", "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and "--skip-existing" in out and "<path>" in out
    assert "Speed and memory" in out and "-t" in out and "--fp32" in out  # grouped; Real-ESRGAN's short options
    assert run(["--help"]) == 0
    assert "--install-completion" in capsys.readouterr().out


def test_an_interrupt_anywhere_exits_130(monkeypatch, capsys):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    # import first what `weights list` imports lazily, so no module binds the patched function for good
    import spsr_cli.weights.auxiliary  # noqa: F401
    import spsr_cli.weights.loader  # noqa: F401

    monkeypatch.setattr("spsr_cli.weights.manifest.load_manifest", interrupted)
    assert run(["weights", "list"]) == 130
    assert "interrupted" in capsys.readouterr().err
