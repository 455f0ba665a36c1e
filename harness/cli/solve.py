"""`harness solve`: one issue, many trajectories, voting, selection, a patch and a report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live

from harness.cli.common import (
    cache_dir,
    conformal_alpha_option,
    draft_model_option,
    run,
    speculate_option,
    speculation_overrides,
)
from harness.cli.live import LiveView
from harness.config import SolveConfig, load_config
from harness.errors import ConfigError, HarnessError, RepoError, TaskError
from harness.runstore import RunStore
from harness.types import SolveResult, Task

err = Console(stderr=True)
NO_PATCH_EXIT = 3


def solve(
    issue: str | None = typer.Argument(
        None,
        help="Issue: a file, - for standard input, owner/repo#123 or a GitHub issue URL. "
        "Not needed with --resume.",
    ),
    repo: str | None = typer.Option(
        None,
        "--repo",
        "-r",
        help="Git repository, plain directory, or git URL (default: the current directory; "
        "for a GitHub issue, a clone of its repository).",
    ),
    commit: str | None = typer.Option(None, help="Base revision (default: HEAD)."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model spec (default: smollm2-135m, the embedded model)."
    ),
    base_url: str | None = typer.Option(None, help="Base URL for openai: model specs."),
    samples: int | None = typer.Option(None, "--samples", "-n", help="Parallel trajectories."),
    config_file: Path | None = typer.Option(None, "--config", help="YAML config file."),
    overrides: list[str] = typer.Option([], "--set", "-c", help="Config override key=value."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory to create."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run directory."),
    candidates: list[Path] = typer.Option(
        [], "--candidates", help="Predictions file of another system (ensemble)."
    ),
    backend: str | None = typer.Option(None, help="Sandbox backend: docker, bwrap, local."),
    max_usd: float | None = typer.Option(None, help="Dollar budget for model calls."),
    max_tokens: int | None = typer.Option(None, help="Token budget for model calls."),
    task_id: str | None = typer.Option(None, help="Name of the task (default: the issue file)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary, no live view."),
    draft_model: str | None = draft_model_option(),
    speculate: int | None = speculate_option(),
    conformal_alpha: float | None = conformal_alpha_option(),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="Solve the instance ISSUE of this SWE-bench-style data set "
        "(hub id or local .json/.jsonl/.parquet); the repo and image come from it.",
    ),
    split: str = typer.Option("test", help="Split of a hub data set (with --dataset)."),
    git_mirror: str | None = typer.Option(
        None, "--git-mirror", help="With --dataset: local mirrors, e.g. /srv/git/{owner}+{name}."
    ),
    specs: list[Path] = typer.Option(
        [], "--specs", help="With --dataset: env specs {repo: {version: spec}} (JSON/YAML)."
    ),
) -> None:
    """Solve ISSUE in --repo: sample trajectories, vote, select; write patch.diff and report.md.

    Exit status: 0 a patch was selected, 3 no patch, 1 an error, 2 bad input.
    """
    extra = [
        f"model={model}" if model else "",
        f"base_url={base_url}" if base_url else "",
        f"samples={samples}" if samples is not None else "",
        f"sandbox.backend={backend}" if backend else "",
        f"budget.max_usd={max_usd}" if max_usd is not None else "",
        f"budget.max_tokens={max_tokens}" if max_tokens is not None else "",
        *speculation_overrides(draft_model, speculate, conformal_alpha),
    ]
    extra = [e for e in extra if e]
    if resume is not None:
        task, config = _load_run(resume)
        if overrides or extra:
            # Budgets and concurrency may change on resume; the problem itself may not.
            from harness.config import to_dict

            config = load_config(None, [*_flatten(to_dict(config)), *overrides, *extra])
        run_dir = resume
    else:
        if issue is None:
            raise ConfigError(
                "no issue given",
                hint="give the issue text as a file or - (standard input), or --resume RUN_DIR",
            )
        # The whole config is checked before any work starts or any directory is made.
        config = load_config(config_file, [*overrides, *extra])
        if out is not None and out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file", hint="pick a new directory for --out")
        stdin_text = (sys.stdin.read() if sys.stdin else "") if issue == "-" else None
        if dataset is not None:
            task, note = run(_instance_task(dataset, issue, split, git_mirror, specs))
        else:
            task, note = run(_input_task(issue, repo, commit, stdin_text, task_id, config))
        if note:
            err.print(f"[dim]{note}[/]")
        run_dir = out or Path("runs") / f"{task.task_id}-{time.strftime('%Y%m%d-%H%M%S')}"
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"run directory {run_dir} already exists and is not empty",
                hint=f"use --resume {run_dir} to continue it, or pick --out",
            )
    result = run(_solve(task, config, run_dir, candidates, as_json))
    if as_json:
        typer.echo(json.dumps(_summary(result), indent=2))
    else:
        _print_result(result)
    raise typer.Exit(0 if result.status == "patched" else NO_PATCH_EXIT)


def _load_run(run_dir: Path) -> tuple[Task, SolveConfig]:
    """The task and config of a run directory to resume; a bad one is bad input (exit 2)."""
    hint = "pass the directory a previous `harness solve` wrote (it holds task.json)"
    try:
        return RunStore(run_dir).load()
    except TaskError as exc:
        raise ConfigError(exc.message, hint=exc.hint or hint) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir} holds an unreadable task.json ({exc!r})", hint=hint) from exc


async def _input_task(
    issue: str,
    repo: str | None,
    commit: str | None,
    stdin_text: str | None,
    task_id: str | None,
    config: SolveConfig,
) -> tuple[Task, str]:
    """The task from the command line; an issue or repository that cannot be read is bad
    input (exit 2), with the message on one line."""
    try:
        return await _task(issue, repo, commit, stdin_text, task_id, config)
    except (TaskError, RepoError) as exc:
        message = " ".join(exc.message.split())
        raise ConfigError(message, hint=exc.hint or "check the issue and --repo/--commit") from exc


def _flatten(data: object, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        out: list[str] = []
        for key, value in data.items():
            if isinstance(value, dict) and value:
                out += _flatten(value, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}={json.dumps(value)}")
        return out
    return []


async def _task(
    issue: str,
    repo: str | None,
    commit: str | None,
    stdin_text: str | None,
    task_id: str | None,
    config: SolveConfig,
) -> tuple[Task, str]:
    from harness.tasks import make_task

    if issue != "-" and not Path(issue).exists() and ("#" in issue or "://" in issue):
        return await _github_task(issue, repo, commit)
    return await make_task(
        issue,
        repo or ".",
        commit,
        cache_dir(),
        stdin_text=stdin_text,
        task_id=task_id,
        image=config.sandbox.image,
    )


async def _instance_task(
    dataset: str, instance_id: str, split: str, git_mirror: str | None, specs: list[Path]
) -> tuple[Task, str]:
    """A SWE-bench instance: its problem statement, repo at base_commit, environment image."""
    from harness.evals.envimages import EnvOptions
    from harness.evals.specs import SpecRegistry
    from harness.evals.tasks import load_instance_task

    registry = SpecRegistry()
    for path in specs:
        registry.load_file(path)
    ca_env = os.environ.get("HARNESS_CA_BUNDLE")
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    ca = Path(ca_env) if ca_env else (host_ca if host_ca.is_file() else None)
    task, _ = await load_instance_task(
        dataset,
        instance_id,
        cache_dir=cache_dir(),
        split=split,
        git_mirror=git_mirror or os.environ.get("HARNESS_GIT_MIRROR"),
        env_options=EnvOptions(ca_bundle=ca),
        specs=registry,
    )
    return task, f"{instance_id} from {dataset} (image {task.image})"


async def _github_task(issue: str, repo: str | None, commit: str | None) -> tuple[Task, str]:
    """`owner/repo#123` or an issue URL: the issue's text, and --repo or a cached clone."""
    from harness.bot import GitHubClient, parse_issue_ref, task_from_issue

    ref = parse_issue_ref(issue)
    env = os.environ
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    server = ref.server_url or env.get("GITHUB_SERVER_URL") or "https://github.com"
    # GitHub Enterprise serves its API under /api/v3 of its own host.
    default_api = "https://api.github.com" if server == "https://github.com" else f"{server}/api/v3"
    api_url = env.get("GITHUB_API_URL") or default_api
    async with GitHubClient(token, api_url=api_url) as client:
        task = await task_from_issue(
            client,
            ref,
            repo=Path(repo) if repo else None,
            cache_dir=cache_dir(),
            commit=commit or "HEAD",
            server_url=server,
            token=token,
        )
    note = f"fetched {ref.full_name}#{ref.number}" + ("" if repo else f" into {task.repo}")
    return task, note


async def _solve(
    task: Task, config: SolveConfig, run_dir: Path, candidate_files: list[Path], quiet: bool
) -> SolveResult:
    from harness.cli.model import store_from_env
    from harness.selectors.ensemble import load_candidates
    from harness.solver import PipelineSolver

    extra = [c for path in candidate_files for c in load_candidates(path, task.task_id)]
    solver = PipelineSolver(
        config,
        cache_dir=cache_dir(),
        store=store_from_env(),
        api_key=os.environ.get("OPENAI_API_KEY"),
        extra_candidates=extra,
    )
    views: list[LiveView] = []

    def make_view(usage: Callable[[], tuple[int, float]]) -> LiveView:
        views.append(LiveView(config.samples, usage))
        return views[-1]

    try:
        if quiet or not sys.stderr.isatty():
            return await solver.solve(task, run_dir)
        await solver.model()  # load before the live view starts
        live = Live(console=err, refresh_per_second=4, transient=False)
        with live:
            job = asyncio.ensure_future(solver.solve_observed(task, run_dir, make_view))
            try:
                while not job.done():
                    if views:
                        live.update(views[0])
                    await asyncio.wait({job}, timeout=0.25)
                return job.result()
            finally:
                if not job.done():  # interrupted: let the run clean up its sandboxes
                    job.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await job
    finally:
        await solver.aclose()


def _summary(result: SolveResult) -> dict[str, object]:
    return {
        "task_id": result.task_id,
        "status": result.status,
        "run_dir": str(result.run_dir),
        "patch": result.patch,
        "test_verified": result.test_verified,
        "winner": next((c.candidate.candidate_id for c in result.candidates if c.selected), None),
        "candidates": [
            {"id": c.candidate.candidate_id, "votes": c.votes, "selected": c.selected}
            for c in result.candidates
        ],
        "tokens": result.tokens,
        "cost_usd": result.cost_usd,
        "duration_s": round(result.duration_s, 3),
        "message": result.message,
    }


def _print_result(result: SolveResult) -> None:
    out = Console()
    if result.status == "patched":
        winner = next((c for c in result.candidates if c.selected), None)
        votes = f" with {winner.votes} vote(s)" if winner else ""
        out.print(f"[bold green]patch selected[/]{votes}: {result.run_dir / 'patch.diff'}")
    else:
        out.print(f"[bold yellow]no patch[/]: {result.message}")
    out.print(f"report: {result.report_path}")
    out.print(
        f"[dim]{result.tokens:,} tokens · ${result.cost_usd:.4f} · {result.duration_s:.0f} s[/]"
    )


__all__ = ["HarnessError", "solve"]
