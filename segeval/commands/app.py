"""The ``segeval`` command line: one Typer app, one module per command.

    evaluate.py  dice, iou, fbeta, evaluate   options → EvalConfig → segeval.evaluate → outputs
    grade.py     grade                         many submissions → leaderboard
    compare.py   compare                       two reports → regression verdict
    options.py   every option declared once, and the parsers of their text
    exits.py     exit codes, and the one place an exception becomes a message and a code

Help texts are rich markup (Typer renders them in panels): write a literal bracket as ``\\[``,
as in ``segeval\\[report]``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from segeval.commands import compare, evaluate, grade
from segeval.commands.exits import EXIT_CODES_HELP

SETTINGS = {"add_completion": False, "context_settings": {"help_option_names": ["-h", "--help"]},
            "pretty_exceptions_enable": False}

app = typer.Typer(
    no_args_is_help=True,
    help="Exact, explicit evaluation of image segmentation (Dice, IoU, F-beta, ...). "
    + EXIT_CODES_HELP,
    **SETTINGS,  # type: ignore[arg-type]
)


def _version(value: bool) -> None:
    if value:
        from segeval.version import __version__

        typer.echo(f"segeval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """The top-level options (``--version``); each command has its own."""


evaluate.register(app)
grade.register(app)
compare.register(app)


def main() -> None:
    """Console-script entry point; usage errors from Typer itself exit 2 as well."""
    app_for(sys.argv[1:])()


def app_for(args: list[str]) -> typer.Typer:
    """The app to run for these arguments: when the first one names a command, an app
    holding only that command.  Typer inspects every command's signature at start-up (about
    5 ms each, ~28 ms in all, on every run); the single command parses, helps and fails
    exactly as in the full app (tests/test_cli.py compares them)."""
    if not args or args[0].startswith("-"):
        return app
    chosen = [info for info in app.registered_commands if info.name == args[0]]
    if len(chosen) != 1:
        return app  # unknown: the full app names the commands there are
    single = typer.Typer(help=app.info.help, **SETTINGS)  # type: ignore[arg-type]
    single.registered_commands = chosen
    single.callback()(_group)  # a group, so that the command is named as a subcommand
    return single


def _group() -> None:
    """The group callback of a single-command app: nothing to do."""


if __name__ == "__main__":
    main()
