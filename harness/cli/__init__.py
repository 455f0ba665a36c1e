"""The `harness` command line (Typer). The only layer that reads the environment and prints.

Each command group lives in its own module here and is registered on `app` below.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from harness import __version__
from harness.errors import ConfigError, HarnessError

app = typer.Typer(
    name="harness",
    help="A test-time-compute coding harness: sample many agent trajectories, vote, select.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"harness {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """harness: many trajectories in parallel, each iterating; voting and selection pick one."""


def _register() -> None:
    # Imported here so `import harness.cli` stays cheap and free of side effects.
    # Command groups add themselves here, one line each.
    from harness.cli import sandbox

    app.add_typer(sandbox.app, name="sandbox")
    app.add_typer(importlib.import_module("harness.cli.eval").app, name="eval")


def report_error(exc: HarnessError) -> None:
    err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)


def main() -> None:
    _register()
    try:
        app()
    except ConfigError as exc:
        report_error(exc)
        sys.exit(2)
    except HarnessError as exc:
        report_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
