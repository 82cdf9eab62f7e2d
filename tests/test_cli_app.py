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
