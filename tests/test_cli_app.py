from spsr_cli import __version__
from spsr_cli.cli.app import run


def test_version_and_help(capsys):
    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().err
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("upscale", "eval", "weights", "train"))


def test_unknown_command_is_a_usage_error():
    assert run(["enlarge"]) == 2
