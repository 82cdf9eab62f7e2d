"""The ``spsr`` command: one small module per command group, all thin calls into the library."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Sequence

import typer
from rich.logging import RichHandler
from typer.core import TyperOption
from typer.exceptions import TyperException

from spsr_cli import __version__
from spsr_cli.cli.common import Interrupted, console, esc, stdout
from spsr_cli.cli.compare import compare_command
from spsr_cli.cli.eval import eval_command
from spsr_cli.cli.train import train_app
from spsr_cli.cli.upscale import upscale_command
from spsr_cli.cli.weights import weights_app
from spsr_cli.errors import SPSRError, UsageError

app = typer.Typer(
    name="spsr",
    help="Structure-preserving x4 super-resolution (SPSR).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

_type_column = TyperOption.display_type_rich


def _without_flag_types(self: TyperOption, ctx: typer.Context) -> str | None:
    """``--help`` shows no ``<bool>`` after a flag: a flag takes no value."""
    return None if self.is_flag else _type_column(self, ctx)


TyperOption.display_type_rich = _without_flag_types  # type: ignore[method-assign]


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)] = False,
) -> None:
    if version:
        typer.echo(f"spsr-cli {__version__}")  # stdout: it is the command's output
        raise typer.Exit(0)
    logging.getLogger("spsr_cli").setLevel(logging.DEBUG if verbose else logging.INFO)
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(2)


app.command("upscale")(upscale_command)
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.add_typer(weights_app, name="weights")
app.add_typer(train_app, name="train")


class _LogHandler(logging.Handler):
    """Rich output on a terminal; plain, unwrapped ``level: message`` lines otherwise, so logs
    written to a file or pipe never split paths and commands at 80 columns."""

    def __init__(self) -> None:
        super().__init__()
        self._rich = RichHandler(console=console, show_time=False, show_path=False, markup=False)

    def emit(self, record: logging.LogRecord) -> None:
        if console.is_terminal:
            self._rich.emit(record)
            return
        try:
            sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
        except (OSError, ValueError):  # closed or broken stderr: nothing sensible left to do
            pass


def _configure_streams() -> None:
    """File names that are not UTF-8 (``os.fsdecode`` surrogates) are shown escaped, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # not a text stream we may reconfigure
            pass


def _configure_logging() -> None:
    root = logging.getLogger("spsr_cli")
    if not any(isinstance(h, _LogHandler) for h in root.handlers):
        root.addHandler(_LogHandler())
        root.setLevel(logging.INFO)
    for shared in (console, stdout):  # messages: wrapped by rich on a terminal, never in files/pipes
        shared.soft_wrap = not shared.is_terminal


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (0 ok, 1 failures, 2 usage errors, 130 interrupted)."""
    _configure_streams()
    _configure_logging()
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False, prog_name="spsr")
    except typer.Exit as done:
        return done.exit_code
    except Interrupted as err:
        console.print(f"[red]interrupted:[/] {esc(err)}")
        return 130
    except (typer.Abort, KeyboardInterrupt):
        console.print("[red]interrupted[/]")
        return 130
    except TyperException as err:  # click's usage errors (Typer vendors click)
        err.show(file=sys.stderr)  # type: ignore[attr-defined]
        return getattr(err, "exit_code", 2)
    except UsageError as err:
        console.print(f"[red]error:[/] {esc(err)}")
        return 2
    except SPSRError as err:
        console.print(f"[red]error:[/] {esc(err)}")
        return 1
    if result == 130:  # click turned Ctrl-C into exit code 130
        console.print("[red]interrupted[/]")
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
