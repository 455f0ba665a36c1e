"""`harness bot github`: act on a GitHub Actions event (issue labeled, `/harness solve`)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from harness.bot.redact import Redactor
from harness.cli.common import cache_dir, run
from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.bot import SolveOptions
    from harness.bot.isolation import WorkerSpec
    from harness.types import Solver

app = typer.Typer(help="Run harness as a bot (GitHub Actions).", no_args_is_help=True)
err = Console(stderr=True)
TOKEN_VARS = ("GITHUB_TOKEN", "GH_TOKEN")


@app.command("github")
def github(
    event: Path | None = typer.Option(
        None, "--event", help="The event payload JSON (default: $GITHUB_EVENT_PATH)."
    ),
    event_name: str | None = typer.Option(
        None, help="issues or issue_comment (default: $GITHUB_EVENT_NAME, else inferred)."
    ),
    repo: Path = typer.Option(Path("."), help="The checked-out repository."),
    label: str = typer.Option("harness", help="The label that asks for a fix."),
    min_permission: str = typer.Option(
        "write", help="Repository permission needed to trigger a run: write, maintain, admin."
    ),
    trust: str | None = typer.Option(None, hidden=True),  # replaced by --min-permission
    branch: str = typer.Option("harness/issue-{number}", help="Branch name template."),
    test_path: str = typer.Option(
        "tests/harness/test_issue_{number}.py", help="Where a verified reproduction test goes."
    ),
    model: str | None = typer.Option(None, help="Default model spec."),
    samples: int | None = typer.Option(None, help="Default number of trajectories."),
    budget_usd: float | None = typer.Option(None, help="Default dollar budget per run."),
    max_samples: int = typer.Option(16, help="Most samples a /harness command may ask for."),
    max_budget_usd: float = typer.Option(20.0, help="Largest budget a command may ask for."),
    allowed_models: str = typer.Option(
        "",
        help="Comma-separated model specs a command may pick (default: none). Hub ids, "
        "served models and store names only: never script: or a local path.",
    ),
    backend: str | None = typer.Option(
        None, help="Sandbox backend, docker or bwrap (default: the config's; never local)."
    ),
    run_dir: Path | None = typer.Option(
        None, help="Where runs go (default: $RUNNER_TEMP/harness-runs, else the cache)."
    ),
    solver: str | None = typer.Option(
        None, help="module:function that builds the Solver from SolveOptions."
    ),
    remote: str = typer.Option("origin", help="Git remote to push the branch to."),
    config_file: Path | None = typer.Option(
        None, "--config", help="harness solve config (YAML) for the runs."
    ),
) -> None:
    """Handle one `issues` / `issue_comment` event: acknowledge, solve, open a pull request.

    This process keeps the GitHub token and talks to GitHub; the solver runs in a child
    process whose environment holds no GitHub credential.
    """
    from harness.bot import BotConfig, GitHubBot, OptionLimits, SolveOptions
    from harness.bot.github import GitHubClient
    from harness.bot.isolation import IsolatedSolver, WorkerSpec, make_undumpable, solver_env

    make_undumpable()  # the solver (same uid) may not read our memory or environ
    env = os.environ
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    redact = Redactor.from_environ(env, extra=[token] if token else [])
    child_env = solver_env(env, [token] if token else [])
    # Nor do this process's own git commands (the push gets its credential explicitly).
    for name in TOKEN_VARS:
        os.environ.pop(name, None)
    if not token:
        _fail(redact, ConfigError("GITHUB_TOKEN is not set", hint="pass secrets.GITHUB_TOKEN"))
    if trust is not None:
        _fail(
            redact,
            ConfigError(
                "--trust (author_association) is gone: org membership is not write access",
                hint="use --min-permission write|maintain|admin (the action's min-permission)",
            ),
        )
    event_path = event or (Path(env["GITHUB_EVENT_PATH"]) if env.get("GITHUB_EVENT_PATH") else None)
    if event_path is None:
        _fail(redact, ConfigError("no event payload", hint="pass --event or set GITHUB_EVENT_PATH"))
    try:
        payload: dict[str, Any] = json.loads(event_path.read_text())
    except (OSError, ValueError) as exc:
        _fail(redact, ConfigError(f"cannot read the event payload {event_path}: {exc}"))
    name = event_name or env.get("GITHUB_EVENT_NAME") or _infer_event_name(payload)
    server_url = env.get("GITHUB_SERVER_URL") or "https://github.com"
    run_url = None
    if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        run_url = f"{server_url}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    runner_temp = env.get("RUNNER_TEMP")
    runs = run_dir or (
        Path(runner_temp) / "harness-runs" if runner_temp else cache_dir() / "bot-runs"
    )
    try:
        config = BotConfig(
            label=label,
            min_permission=min_permission,  # type: ignore[arg-type]  # checked by BotConfig
            branch=branch,
            test_path=test_path,
            defaults=SolveOptions(samples=samples, model=model, budget_usd=budget_usd),
            limits=OptionLimits(
                max_samples=max_samples,
                max_budget_usd=max_budget_usd,
                allowed_models=tuple(m.strip() for m in allowed_models.split(",") if m.strip()),
            ),
            remote=remote,
            server_url=server_url,
            run_url=run_url,
        )
        spec = WorkerSpec(solver=solver, config_file=config_file, backend=backend)
        check_worker_spec(spec)
    except HarnessError as exc:
        _fail(redact, exc)

    def log(line: str) -> None:
        err.print(f"[dim]harness-bot:[/] {escape(redact(line))}", highlight=False, soft_wrap=True)

    def factory(options: SolveOptions) -> Solver:
        return IsolatedSolver(spec, options, env=child_env, log=log)

    async def main() -> str:
        api_url = env.get("GITHUB_API_URL") or "https://api.github.com"
        async with GitHubClient(token, api_url=api_url) as client:
            bot = GitHubBot(
                client,
                factory,
                config,
                repo=repo.resolve(),
                run_root=runs,
                token=token,
                redact=redact,
                log=log,
            )
            outcome = await bot.handle(name, payload)
        return f"{outcome.action}: {outcome.detail}" + (
            f" {outcome.pull_url}" if outcome.pull_url else ""
        )

    try:
        summary = run(main())
    except HarnessError as exc:
        _fail(redact, exc)
    except Exception as exc:  # an unexpected bug: show it, but redacted
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact(text))
        raise typer.Exit(1) from None
    typer.echo(redact(summary))


@app.command("solve-worker", hidden=True)
def solve_worker() -> None:
    """The solver's process (started by `bot github`): a JSON request on stdin, the result
    in the run directory. It refuses to run holding a GitHub credential."""
    from harness.bot.isolation import (
        CREDENTIAL_VARS,
        RESULT_FILE,
        error_json,
        parse_request,
        result_json,
    )

    request = parse_request(json.loads(sys.stdin.read()))
    spec, options, task, run_dir = request
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        held = [name for name in CREDENTIAL_VARS if name in os.environ]
        if held:
            raise HarnessError(f"the solver process holds {', '.join(held)}; refusing to run")
        check_worker_spec(spec)
        factory = _load_factory(spec.solver) if spec.solver else _pipeline(spec, os.environ)
        result = run(factory(options).solve(task, run_dir))
        answer = result_json(result)
    except Exception as exc:
        answer = error_json(exc)
    (run_dir / RESULT_FILE).write_text(json.dumps(answer))
    if "error" in answer:
        err.print(f"[bold red]error:[/] {escape(answer['error']['message'])}", highlight=False)
        raise typer.Exit(2 if answer["error"]["config"] else 1)


def check_worker_spec(spec: WorkerSpec) -> None:
    """Refuse what would run model-written code on the host, next to the bot's secrets."""
    from harness.config import load_config

    if spec.solver is not None:
        module_name, _, attr = spec.solver.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"--solver {spec.solver!r}: expected module:function")
    chosen = spec.backend
    if chosen is None and spec.config_file is not None and spec.solver is None:
        chosen = load_config(spec.config_file).sandbox.backend
    _check_backend(chosen)


def _check_backend(backend: str | None) -> None:
    if backend == "local":
        raise ConfigError(
            "the local sandbox backend is refused in bot mode: it runs model-written code "
            "on the host, unisolated",
            hint="use --backend docker (the default) or --backend bwrap",
        )
    if backend not in (None, "docker", "bwrap"):
        raise ConfigError(f"unknown sandbox backend {backend!r}", hint="use docker or bwrap")


def _infer_event_name(payload: dict[str, Any]) -> str:
    if "comment" in payload:
        return "issue_comment"
    return "issues" if "issue" in payload else "unknown"


def _load_factory(spec: str) -> Callable[[SolveOptions], Solver]:
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable[[SolveOptions], Solver] = getattr(
            importlib.import_module(module_name), attr
        )
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--solver {spec!r}: cannot import it ({exc})") from exc
    return factory


def _fail(redact: Redactor, exc: HarnessError) -> NoReturn:
    err.print(f"[bold red]error:[/] {redact(exc.message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {redact(exc.hint)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2 if isinstance(exc, ConfigError) else 1)


def _pipeline(spec: WorkerSpec, env: Mapping[str, str]) -> Callable[[SolveOptions], Solver]:
    """A factory of `harness solve` pipelines: the config file, then what the trigger asked."""
    from harness.cli.model import store_from_env
    from harness.config import load_config
    from harness.solver import PipelineSolver

    fixed = [f"sandbox.backend={spec.backend}"] if spec.backend else []
    base = load_config(spec.config_file, fixed)
    _check_backend(base.sandbox.backend)  # whatever the config file says
    store = store_from_env()
    api_key = env.get("OPENAI_API_KEY")

    def make(options: SolveOptions) -> Solver:
        overrides = [
            f"{key}={value}"
            for key, value in (
                ("samples", options.samples),
                ("model", options.model),
                ("budget.max_usd", options.budget_usd),
            )
            if value is not None
        ]
        config = load_config(spec.config_file, fixed + overrides) if overrides else base
        return PipelineSolver(config, cache_dir=cache_dir(), store=store, api_key=api_key)

    return make
