"""`harness bot github`: act on a GitHub Actions event (issue labeled, `/harness solve`)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from harness.bot.redact import Redactor
from harness.cli.common import cache_dir, github_urls, load_config, run
from harness.cli.options import (
    PipelineFlags,
    backend_option,
    base_url_option,
    comma_list,
    config_option,
    hidden_option,
    max_tokens_option,
    max_usd_option,
    model_option,
    out_option,
    renamed,
    samples_option,
    set_option,
    solver_option,
)
from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.bot import BotConfig, SolveOptions
    from harness.config import Config, SolveConfig
    from harness.types import Solver

app = typer.Typer(help="Run harness as a bot (GitHub Actions).", no_args_is_help=True)
err = Console(stderr=True)
TOKEN_VARS = ("GITHUB_TOKEN", "GH_TOKEN")
WORKER_CONFIG = "solve-config.yaml"  # under --out: the runs' solve config, for the solver process


@dataclass(frozen=True)
class Secrets:
    """The GitHub token, taken out of this process's environment, and what hides it."""

    token: str | None
    redact: Redactor
    child_env: dict[str, str]  # the solver process's environment: no GitHub credential

    @classmethod
    def take(cls) -> Secrets:
        env = dict(os.environ)
        token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
        from harness.bot.isolation import solver_env

        secrets = cls(
            token,
            Redactor.from_environ(env, extra=[token] if token else []),
            solver_env(env, [token] if token else []),
        )
        # Nor do this process's own git commands see it (the push gets it explicitly).
        for name in TOKEN_VARS:
            os.environ.pop(name, None)
        return secrets


@app.command("github")
def github(
    event: Path | None = typer.Option(
        None, "--event", help="The event payload JSON (default: $GITHUB_EVENT_PATH)."
    ),
    event_name: str | None = typer.Option(
        None, help="issues or issue_comment (default: $GITHUB_EVENT_NAME, else inferred)."
    ),
    repo: Path = typer.Option(Path("."), help="The checked-out repository."),
    out: Path | None = out_option(
        "Where runs go (default: $RUNNER_TEMP/harness-runs, else the cache)."
    ),
    config_file: Path | None = config_option(),
    overrides: list[str] = set_option(),
    model: str | None = model_option("Model spec of the runs (a comment may pick another)."),
    base_url: str | None = base_url_option(),
    samples: int | None = samples_option(),
    backend: str | None = backend_option(
        "Sandbox backend: docker (default) or bwrap; local is refused in bot mode."
    ),
    max_usd: float | None = max_usd_option(),
    max_tokens: int | None = max_tokens_option(),
    solver: str | None = solver_option(),
    label: str | None = typer.Option(None, help="The label that asks for a fix (harness)."),
    min_permission: str | None = typer.Option(
        None,
        help="Repository permission needed to trigger a run: write (default), maintain, admin.",
    ),
    branch: str | None = typer.Option(None, help="Branch name template (harness/issue-{number})."),
    test_path: str | None = typer.Option(
        None, help="Where a verified reproduction test goes (tests/harness/test_issue_{number}.py)."
    ),
    remote: str | None = typer.Option(None, help="Git remote to push the branch to (origin)."),
    comment_max_samples: int | None = typer.Option(
        None, help="Most samples a /harness command may ask for (16)."
    ),
    comment_max_usd: float | None = typer.Option(
        None, help="Largest --max-usd a /harness command may ask for (20)."
    ),
    allowed_models: str | None = typer.Option(
        None,
        help="Comma-separated model specs a command may pick (default: none). Hub ids, "
        "served models and store names only: never script: or a local path.",
    ),
    run_dir_old: Path | None = hidden_option("--run-dir"),
    budget_usd_old: float | None = hidden_option("--budget-usd"),
    max_samples_old: int | None = hidden_option("--max-samples"),
    max_budget_usd_old: float | None = hidden_option("--max-budget-usd"),
    trust: str | None = hidden_option("--trust"),  # removed: --min-permission
) -> None:
    """Handle one `issues` / `issue_comment` event: acknowledge, solve, open a pull request.

    This process keeps the GitHub token and talks to GitHub; the solver runs in a child
    process whose environment holds no GitHub credential.
    """
    from harness.bot.isolation import make_undumpable

    make_undumpable()  # the solver (same uid) may not read our memory or environ
    secrets = Secrets.take()
    try:
        if not secrets.token:
            raise ConfigError("GITHUB_TOKEN is not set", hint="pass secrets.GITHUB_TOKEN")
        if trust is not None:
            raise ConfigError(
                "--trust (author_association) is gone: org membership is not write access",
                hint="use --min-permission write|maintain|admin (the action's min-permission)",
            )
        pipeline = PipelineFlags(
            model,
            base_url,
            samples,
            backend,
            renamed(max_usd, budget_usd_old, "--budget-usd", "--max-usd"),
            max_tokens,
        )
        bot_flags = {
            "bot.label": label,
            "bot.min_permission": min_permission,
            "bot.branch": branch,
            "bot.test_path": test_path,
            "bot.remote": remote,
            "bot.comment_max_samples": renamed(
                comment_max_samples, max_samples_old, "--max-samples", "--comment-max-samples"
            ),
            "bot.comment_max_usd": renamed(
                comment_max_usd, max_budget_usd_old, "--max-budget-usd", "--comment-max-usd"
            ),
            "bot.allowed_models": comma_list(allowed_models),
        }
        cfg = load_config(config_file, overrides, {**pipeline.keys(), **bot_flags})
        check_backend(cfg.solve.sandbox.backend)
        if solver is not None:
            from harness.cli.solvers import check_spec

            check_spec(solver)
        name, payload = _read_event(event, event_name)
        config = bot_config(cfg)
        runs = renamed(out, run_dir_old, "--run-dir", "--out") or _default_runs()
        if solver is None:  # in the workflow's log, for whoever set the bot up
            from harness.cli.solve import embedded_model_note

            embedded_model_note(cfg.solve.model)
    except HarnessError as exc:
        _fail(secrets.redact, exc)
    _handle(secrets, config, cfg.solve, solver, repo.resolve(), runs, name, payload)


def _handle(
    secrets: Secrets,
    config: BotConfig,
    solve_config: SolveConfig,
    solver: str | None,
    repo: Path,
    runs: Path,
    name: str,
    payload: dict[str, Any],
) -> None:
    """Run the bot on the event; print its outcome (exit 0) or the error, redacted."""
    from harness.bot import GitHubBot
    from harness.bot.github import GitHubClient
    from harness.bot.isolation import IsolatedSolver, WorkerSpec

    redact = secrets.redact

    def log(line: str) -> None:
        err.print(f"[dim]harness-bot:[/] {escape(redact(line))}", highlight=False, soft_wrap=True)

    def factory(options: SolveOptions) -> Solver:
        spec = WorkerSpec(solver=solver, config_file=_write_worker_config(runs, solve_config))
        return IsolatedSolver(spec, options, env=secrets.child_env, log=log)

    async def main() -> str:
        _, api_url = github_urls()
        async with GitHubClient(secrets.token, api_url=api_url) as client:
            bot = GitHubBot(
                client,
                factory,
                config,
                repo=repo,
                run_root=runs,
                token=secrets.token,
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


def _read_event(event: Path | None, event_name: str | None) -> tuple[str, dict[str, Any]]:
    env = os.environ
    path = event or (Path(env["GITHUB_EVENT_PATH"]) if env.get("GITHUB_EVENT_PATH") else None)
    if path is None:
        raise ConfigError("no event payload", hint="pass --event or set GITHUB_EVENT_PATH")
    try:
        payload: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the event payload {path}: {exc}") from exc
    return event_name or env.get("GITHUB_EVENT_NAME") or _infer_event_name(payload), payload


def bot_config(cfg: Config) -> BotConfig:
    """The bot's config from the loaded one (and the Actions run this is)."""
    from harness.bot import BotConfig, OptionLimits

    env = os.environ
    server_url, _ = github_urls()
    run_url = None
    if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        run_url = f"{server_url}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    settings = cfg.bot
    return BotConfig(
        label=settings.label,
        min_permission=settings.min_permission,  # type: ignore[arg-type]  # checked at load
        branch=settings.branch,
        test_path=settings.test_path,
        defaults=_run_options(cfg.solve),
        limits=OptionLimits(
            max_samples=settings.comment_max_samples,
            max_budget_usd=settings.comment_max_usd,
            allowed_models=settings.allowed_models,
        ),
        remote=settings.remote,
        server_url=server_url,
        run_url=run_url,
    )


def _run_options(config: SolveConfig) -> SolveOptions:
    """What the workflow set that a comment may also set (shown on the issue); the rest are
    the defaults."""
    from harness.bot import SolveOptions
    from harness.config import SolveConfig

    default = SolveConfig()
    return SolveOptions(
        samples=config.samples if config.samples != default.samples else None,
        model=config.model if config.model != default.model else None,
        budget_usd=config.budget.max_usd,
    )


def _default_runs() -> Path:
    runner_temp = os.environ.get("RUNNER_TEMP")
    return Path(runner_temp) / "harness-runs" if runner_temp else cache_dir() / "bot-runs"


def _write_worker_config(runs: Path, config: SolveConfig) -> Path:
    """The runs' solve config as a file the solver process loads (and checks) again."""
    import yaml

    from harness.config import to_dict
    from harness.store import write_text

    path = runs / WORKER_CONFIG
    runs.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
    return path


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
        config = _worker_config(spec.config_file, spec.backend, options)
        result = run(_solve_once(spec.solver, config, task, run_dir))
        answer = result_json(result)
    except Exception as exc:
        answer = error_json(exc)
    (run_dir / RESULT_FILE).write_text(json.dumps(answer))
    if "error" in answer:
        err.print(f"[bold red]error:[/] {escape(answer['error']['message'])}", highlight=False)
        raise typer.Exit(2 if answer["error"]["config"] else 1)


def _worker_config(
    config_file: Path | None, backend: str | None, options: SolveOptions
) -> SolveConfig:
    """The runs' config with what the trigger asked for, checked again (never local)."""
    flags = {
        "samples": options.samples,
        "model": options.model,
        "budget.max_usd": options.budget_usd,
        "sandbox.backend": backend,
    }
    config = load_config(config_file, [], flags).solve
    check_backend(config.sandbox.backend)
    return config


async def _solve_once(solver: str | None, config: SolveConfig, task: Any, run_dir: Path) -> Any:
    from harness.cli.solvers import solver_factory

    built = solver_factory(solver)(config)
    try:
        return await built.solve(task, run_dir)
    finally:
        await built.aclose()  # e.g. the pipeline's loaded model


def check_backend(backend: str | None) -> None:
    """Refuse what would run model-written code on the host, next to the bot's secrets."""
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


def _fail(redact: Redactor, exc: HarnessError) -> NoReturn:
    err.print(f"[bold red]error:[/] {redact(exc.message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {redact(exc.hint)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2 if isinstance(exc, ConfigError) else 1)
