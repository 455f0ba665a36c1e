"""`harness solve`: one issue, many trajectories, voting, selection, a patch and a report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.live import Live

from harness.cli.common import (
    ca_bundle,
    cache_dir,
    github_urls,
    load_config,
    local_backend_warning,
    run,
)
from harness.cli.live import LiveView
from harness.cli.options import (
    PipelineFlags,
    backend_option,
    base_url_option,
    config_option,
    conformal_alpha_option,
    draft_model_option,
    max_tokens_option,
    max_usd_option,
    model_option,
    out_option,
    resume_option,
    samples_option,
    set_option,
    speculate_option,
)
from harness.config import Config, SolveConfig
from harness.errors import ConfigError, HarnessError, RepoError, TaskError
from harness.report import dollars
from harness.runstore import RunStore
from harness.types import SolveResult, Task

if TYPE_CHECKING:
    from harness.solver import PipelineSolver

err = Console(stderr=True)
NO_PATCH_EXIT = 3
CAPABLE_MODELS = (
    "-m openai:gpt-4o (any OpenAI-compatible server: --base-url or $OPENAI_BASE_URL, key in "
    "$OPENAI_API_KEY) or -m hf:Qwen/Qwen2.5-Coder-7B-Instruct (in-process, a GPU helps)"
)


@dataclass(frozen=True)
class IssueSource:
    """Where the issue and its repository come from (the command line of a new run)."""

    issue: str
    repo: str | None = None
    commit: str | None = None
    task_id: str | None = None
    dataset: str | None = None
    split: str = "test"


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
    config_file: Path | None = config_option(),
    overrides: list[str] = set_option(),
    model: str | None = model_option(),
    base_url: str | None = base_url_option(),
    samples: int | None = samples_option(),
    backend: str | None = backend_option(),
    max_usd: float | None = max_usd_option(),
    max_tokens: int | None = max_tokens_option(),
    draft_model: str | None = draft_model_option(),
    speculate: int | None = speculate_option(),
    conformal_alpha: float | None = conformal_alpha_option(),
    out: Path | None = out_option("Run directory to create (default: runs/TASK-TIME)."),
    resume: Path | None = resume_option("Continue the run in DIR (after Ctrl-C or a crash)."),
    candidates: list[Path] = typer.Option(
        [], "--candidates", help="Predictions file of another system (ensemble)."
    ),
    task_id: str | None = typer.Option(None, help="Name of the task (default: the issue file)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary, no live view."),
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
    pipeline = PipelineFlags(
        model, base_url, samples, backend, max_usd, max_tokens, draft_model, speculate,
        conformal_alpha,
    )  # fmt: skip
    flags = {
        **pipeline.keys(),
        "eval.git_mirror": git_mirror,
        "eval.specs": tuple(specs) or None,
    }
    if resume is not None:
        task, cfg, run_dir = _resumed_run(resume, config_file, overrides, flags)
    else:
        if issue is None:
            raise ConfigError(
                "no issue given",
                hint="give the issue text as a file or - (standard input), or --resume RUN_DIR",
            )
        source = IssueSource(issue, repo, commit, task_id, dataset, split)
        task, cfg, run_dir = _new_run(source, config_file, overrides, flags, out)
    config = cfg.solve
    embedded = embedded_model_note(config.model)
    result = run(_solve(task, config, run_dir, candidates, as_json))
    if as_json:
        typer.echo(json.dumps(_summary(result), indent=2))
    else:
        _print_result(result, embedded)
    raise typer.Exit(0 if result.status == "patched" else NO_PATCH_EXIT)


def _resumed_run(
    run_dir: Path, config_file: Path | None, overrides: list[str], flags: dict[str, object]
) -> tuple[Task, Config, Path]:
    """The task of a run directory and its config, with budgets (or anything else) changed
    by --config, -c and flags; the problem itself may not change."""
    task, saved = _load_run(run_dir)
    cfg = load_config(config_file, overrides, flags, base=saved)
    local_backend_warning(cfg.solve.sandbox.backend)
    return task, cfg, run_dir


def _new_run(
    source: IssueSource,
    config_file: Path | None,
    overrides: list[str],
    flags: dict[str, object],
    out: Path | None,
) -> tuple[Task, Config, Path]:
    """The whole config is checked, then the issue and repository read, before any directory
    is made."""
    cfg = load_config(config_file, overrides, flags)
    local_backend_warning(cfg.solve.sandbox.backend)
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="pick a new directory for --out")
    stdin_text = (sys.stdin.read() if sys.stdin else "") if source.issue == "-" else None
    if source.dataset is not None:
        task, note = run(_instance_task(source, cfg))
    else:
        task, note = run(_input_task(source, stdin_text, cfg.solve))
    if note:
        err.print(f"[dim]{note}[/]")
    run_dir = out or Path("runs") / f"{task.task_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} already exists and is not empty",
            hint=f"use --resume {run_dir} to continue it, or pick --out",
        )
    return task, cfg, run_dir


def _load_run(run_dir: Path) -> tuple[Task, SolveConfig]:
    """The task and config of a run directory to resume; a bad one is bad input (exit 2)."""
    hint = "pass the directory a previous `harness solve` wrote (it holds task.json)"
    try:
        return RunStore(run_dir).load()
    except TaskError as exc:
        raise ConfigError(exc.message, hint=exc.hint or hint) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir} holds an unreadable task.json ({exc!r})", hint=hint) from exc


def embedded_model_note(model: str) -> bool:
    """Say so when the model is the embedded SmolLM2-135M: it shows the pipeline working, but
    rarely fixes a real bug. True when it is."""
    from harness.llm.model_store import DEFAULT_MODEL
    from harness.llm.specs import parse_spec

    spec = parse_spec(model)
    if spec.kind != "store" or spec.target != DEFAULT_MODEL:
        return False
    err.print(
        f"[yellow]note:[/] the model is the embedded {DEFAULT_MODEL} (135M parameters, on the "
        "CPU): it demonstrates the pipeline and rarely fixes a real bug. For a capable model "
        f"pass {CAPABLE_MODELS}.",
        highlight=False,
        soft_wrap=True,
    )
    return True


async def _input_task(
    source: IssueSource, stdin_text: str | None, config: SolveConfig
) -> tuple[Task, str]:
    """The task from the command line; an issue or repository that cannot be read is bad
    input (exit 2), with the message on one line."""
    try:
        return await _task(source, stdin_text, config)
    except (TaskError, RepoError) as exc:
        message = " ".join(exc.message.split())
        raise ConfigError(message, hint=exc.hint or "check the issue and --repo/--commit") from exc


async def _task(
    source: IssueSource, stdin_text: str | None, config: SolveConfig
) -> tuple[Task, str]:
    from harness.tasks import make_task

    issue = source.issue
    if issue != "-" and not Path(issue).exists() and ("#" in issue or "://" in issue):
        return await _github_task(source)
    return await make_task(
        issue,
        source.repo or ".",
        source.commit,
        cache_dir(),
        stdin_text=stdin_text,
        task_id=source.task_id,
        image=config.sandbox.image,
    )


async def _instance_task(source: IssueSource, cfg: Config) -> tuple[Task, str]:
    """A SWE-bench instance: its problem statement, repo at base_commit, environment image
    (built with the config's `eval:` settings: mirrors, specs, CA bundle)."""
    from harness.evals.envimages import EnvOptions
    from harness.evals.specs import SpecRegistry
    from harness.evals.tasks import load_instance_task

    assert source.dataset is not None
    registry = SpecRegistry()
    for path in cfg.eval.specs:
        registry.load_file(path)
    task, _ = await load_instance_task(
        source.dataset,
        source.issue,
        cache_dir=cache_dir(),
        split=source.split,
        git_mirror=cfg.eval.git_mirror,
        env_options=EnvOptions(ca_bundle=ca_bundle(cfg.eval.ca_bundle)),
        specs=registry,
    )
    return task, f"{source.issue} from {source.dataset} (image {task.image})"


async def _github_task(source: IssueSource) -> tuple[Task, str]:
    """`owner/repo#123` or an issue URL: the issue's text, and --repo or a cached clone."""
    from harness.bot import GitHubClient, parse_issue_ref, task_from_issue

    ref = parse_issue_ref(source.issue)
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    server, api_url = github_urls(ref.server_url)
    async with GitHubClient(token, api_url=api_url) as client:
        task = await task_from_issue(
            client,
            ref,
            repo=Path(source.repo) if source.repo else None,
            cache_dir=cache_dir(),
            commit=source.commit or "HEAD",
            server_url=server,
            token=token,
        )
    note = f"fetched {ref.full_name}#{ref.number}" + ("" if source.repo else f" into {task.repo}")
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
    try:
        if quiet or not sys.stderr.isatty():
            return await solver.solve(task, run_dir)
        await solver.model()  # load before the live view starts
        return await _solve_live(solver, task, run_dir, config.samples)
    finally:
        await solver.aclose()


async def _solve_live(
    solver: PipelineSolver, task: Task, run_dir: Path, samples: int
) -> SolveResult:
    """The solve with a live view of its samples on the terminal."""
    from harness.solver import unpriced_models

    unpriced = unpriced_models(solver.config, solver.prices)
    views: list[LiveView] = []

    def make_view(usage: Callable[[], tuple[int, float]]) -> LiveView:
        views.append(LiveView(samples, usage, unpriced))
        return views[-1]

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
        "cost_usd": None if result.unpriced else result.cost_usd,  # None: unknown
        "unpriced": list(result.unpriced),
        "duration_s": round(result.duration_s, 3),
        "message": result.message,
    }


def _print_result(result: SolveResult, embedded_model: bool = False) -> None:
    out = Console()
    if result.status == "patched":
        winner = next((c for c in result.candidates if c.selected), None)
        votes = f" with {winner.votes} vote(s)" if winner else ""
        out.print(f"[bold green]patch selected[/]{votes}: {result.run_dir / 'patch.diff'}")
    else:
        out.print(f"[bold yellow]no patch[/]: {result.message}")
        if embedded_model:
            out.print(
                f"[yellow]hint:[/] the embedded 135M model rarely fixes real bugs; try a "
                f"capable model: {CAPABLE_MODELS}",
                highlight=False,
                soft_wrap=True,
            )
    out.print(f"report: {result.report_path}")
    out.print(
        f"[dim]{result.tokens:,} tokens · {dollars(result.cost_usd, result.unpriced)} · "
        f"{result.duration_s:.0f} s[/]",
        highlight=False,
    )


__all__ = ["HarnessError", "solve"]
