"""The `harness` command line (Typer). The only layer that reads the environment and prints.

Each command group lives in its own module here and is registered on `app` below.
"""

from __future__ import annotations

import os
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


_registered = False


def _register() -> None:
    # Imported here so `import harness.cli` stays cheap and free of side effects.
    # Command groups add themselves here, one line each. Idempotent (tests call it too).
    global _registered
    if _registered:
        return
    _registered = True
    from harness.cli import bot, model, sandbox, serve, solve
    from harness.cli import eval as eval_cli

    app.command("solve")(solve.solve)
    app.add_typer(sandbox.app, name="sandbox")
    app.add_typer(bot.app, name="bot")
    app.add_typer(model.app)
    app.command("serve")(serve.serve)
    app.add_typer(eval_cli.app, name="eval")


def report_error(exc: HarnessError) -> None:
    err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)


def main() -> None:
    # Library progress bars (GGUF de-quantisation, downloads) would tear the live view.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader uses tqdm directly
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
