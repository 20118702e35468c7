"""`cxdi`: the program. Registers every subcommand from an explicit list; heavy imports stay lazy."""
from __future__ import annotations

import importlib
import sys

import typer

from cxdi_cli import __version__
from cxdi_cli.commands._common import cli_command

#: (command name, module in cxdi_cli.commands, function). Explicit, so nothing is picked up by accident.
COMMANDS: list[tuple[str, str, str]] = [
    ("preprocess", "preprocess", "preprocess"),
    ("mask", "mask", "mask"),
    ("assemble3d", "assemble3d", "assemble3d"),
    ("orient", "orient", "orient"),
    ("phase", "phase", "phase"),
    ("average", "average", "average"),
    ("resolve-prt", "resolve_prt", "resolve_prt"),
    ("simulate", "simulate", "simulate"),
    ("plan", "plan", "plan"),
    ("info", "info", "info"),
    ("show", "show", "show"),
]

app = typer.Typer(
    name="cxdi",
    help="Coherent X-ray diffraction imaging: from detector frames to an image and its resolution.\n\n"
         "Exit status: 0 success, 1 data or computation error, 2 usage error.",
    add_completion=True,
    rich_markup_mode=None,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"cxdi {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Coherent X-ray diffraction imaging: from detector frames to an image and its resolution."""


def _register() -> None:
    for name, module, func in COMMANDS:
        try:
            mod = importlib.import_module(f"cxdi_cli.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cxdi_cli.commands.{module}":
                continue  # command not built yet
            raise
        fn = getattr(mod, func)
        app.command(name, help=fn.__doc__)(cli_command(name, fn))


_register()


def run() -> None:
    """Console-script entry point."""
    app(prog_name="cxdi")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
