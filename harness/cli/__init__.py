"""The `harness` command line (Typer). The only layer that reads the environment and prints.

Each command group lives in its own module here and is registered on `app` below.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import SimpleNamespace
from typing import Any

import typer
import typer.main
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


# Typer's own type labels -> the placeholders help conventionally shows (click's names).
_METAVARS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH", "bool": "BOOLEAN"}


def conventional_help(command: Any) -> Any:
    """Help as users expect it: no placeholder after a flag (`--json`, not `--json <bool>`) and
    TEXT / INTEGER / PATH after an option that takes a value, unless it names its own
    (`--samples N`). Recent Typer shows a `<type>` label for every option, flags included."""
    params = list(getattr(command, "params", ()))
    with contextlib.suppress(AttributeError, TypeError):  # --help, made (and kept) on demand
        help_option = command.get_help_option(SimpleNamespace(help_option_names=["--help"]))
        if help_option is not None:
            params.append(help_option)
    for param in params:
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        display = getattr(param, "display_type", None)
        if display is None:  # an older Typer: click's own conventional labels
            continue
        label = display(None).strip("<>").removeprefix("list[").removesuffix("]").lower()
        label = _METAVARS.get(label.removesuffix(" range"), label.upper())
        if param.param_type_name == "argument":
            # An argument is shown by its name (ISSUE); its type column ignores metavar.
            param.metavar = param.name.upper()
            param.display_type_rich = lambda ctx, label=label: label
        else:
            param.metavar = label
    for sub in getattr(command, "commands", {}).values():
        conventional_help(sub)
    return command


def _usage_error_class() -> type[Exception]:
    """click's UsageError, wherever this Typer keeps click (vendored in recent versions)."""
    return sys.modules[typer.BadParameter.__module__].UsageError  # type: ignore[no-any-return]


def command_path(command: Any, args: list[str]) -> str:
    """`harness eval run` for args `eval run --workers`: the (sub)command the args name."""
    words = ["harness"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def report_usage_error(exc: Any, where: str = "harness") -> int:
    """A malformed command line (`-n abc`, an unknown option) as one line and a hint, exit 2,
    like every other input error; Typer's own is a multi-line box. `where`: the command the
    line names, for errors click raises before it has a context (a missing option value)."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # `harness eval`: the help is the answer
        if ctx is not None:
            typer.echo(ctx.get_help(), err=True)
        return 2
    where = ctx.command_path if ctx is not None else where
    message = " ".join(exc.format_message().split())
    report_error(ConfigError(message, hint=f"see `{where} --help`"))
    return 2


def main(argv: list[str] | None = None) -> None:
    # Library progress bars (GGUF de-quantisation, downloads) would tear the live view.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader uses tqdm directly
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register()
    from harness.cli.eval import legacy_resume_switch

    args = legacy_resume_switch(sys.argv[1:] if argv is None else argv)
    command = conventional_help(typer.main.get_command(app))
    try:
        code = command.main(args=args, prog_name="harness", standalone_mode=False)
    except _usage_error_class() as exc:
        sys.exit(report_usage_error(exc, command_path(command, args)))
    except ConfigError as exc:
        report_error(exc)
        sys.exit(2)
    except HarnessError as exc:
        report_error(exc)
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
