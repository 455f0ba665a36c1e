"""GitHubBot end to end (minus the real solve pipeline): fake GitHub on loopback, a real bare
remote on disk, and small real Solvers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.bot import (
    BotConfig,
    BotOutcome,
    GitHubBot,
    GitHubClient,
    OptionLimits,
    Redactor,
    SolveOptions,
)
from harness.bot.events import Trigger, parse_event
from harness.bot.render import marker
from harness.errors import GitHubError, RepoError
from harness.types import Solver
from tests.bot.conftest import ISSUE, REPO, Project, comment_event, label_event
from tests.bot.ghserver import FakeGitHub
from tests.bot.solvers import FIXED, FixingSolver, NothingSolver
from tests.conftest import git

RUN_URL = "https://github.com/octo/calc/actions/runs/4242"


async def no_sleep(_: float) -> None:
    return None


class Factory:
    """A SolverFactory that records the options it was given."""

    def __init__(self, solver: Solver) -> None:
        self.solver = solver
        self.options: list[SolveOptions] = []

    def __call__(self, options: SolveOptions) -> Solver:
        self.options.append(options)
        return self.solver


async def handle(
    github: FakeGitHub,
    project: Project,
    token: str,
    payload: dict[str, Any],
    factory: Callable[[SolveOptions], Solver],
    *,
    event: str = "issues",
    logs: list[str] | None = None,
    **config: Any,
) -> BotOutcome:
    """One delivery, as one Actions run would handle it (a fresh client each time)."""
    async with GitHubClient(token, api_url=github.api_url, sleep=no_sleep) as client:
        bot = GitHubBot(
            client,
            factory,
            BotConfig(run_url=RUN_URL, **config),
            repo=project.work,
            run_root=project.work.parent / "runs",
            token=token,
            redact=Redactor([token]),
            log=(logs if logs is not None else []).append,
        )
        return await bot.handle(event, payload)


def bot_comments(github: FakeGitHub) -> list[dict[str, Any]]:
    return [c for c in github.issue_comments(REPO, ISSUE) if c["user"]["type"] == "Bot"]


def branches(project: Project) -> list[str]:
    return git(project.bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def pytest_in(repo: Path, test: str) -> int:
    """Run one test file with plain pytest (no plugins: they only slow the start)."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    ).returncode


async def test_trusted_label_opens_a_pull_request(
    github: FakeGitHub, project: Project, token: str, tmp_path: Path
) -> None:
    solver = FixingSolver()
    logs: list[str] = []
    outcome = await handle(github, project, token, label_event(github), Factory(solver), logs=logs)

    assert outcome.action == "opened" and outcome.pull_url == f"https://github.com/{REPO}/pull/101"
    assert solver.closed == 1, "the solver built for the trigger is closed after it"
    # The task the solver got: the checkout at HEAD, the issue with its comments.
    (task,) = solver.tasks
    assert (task.task_id, task.repo, task.base_commit) == (
        "octo__calc-7",
        str(project.work),
        project.base,
    )
    assert task.title == "add() subtracts"
    assert "returns -1 instead of 5" in task.issue and "Same here on 1.2." in task.issue
    # The pushed branch: the fix plus the verified reproduction test, on top of the base.
    assert branches(project) == ["harness/issue-7", "main"]
    assert git(project.bare, "show", "harness/issue-7:calc.py") + "\n" == FIXED
    assert git(project.bare, "rev-parse", "harness/issue-7^") == project.base
    changed = git(project.bare, "diff", "--name-only", "main", "harness/issue-7").split()
    assert changed == ["calc.py", "tests/harness/test_issue_7.py"]
    # ... and that test is a real pytest test: it passes on the fix and fails without it.
    pr_tree = tmp_path / "pr"
    git(tmp_path, "clone", "-q", "-b", "harness/issue-7", str(project.bare), str(pr_tree))
    assert pytest_in(pr_tree, "tests/harness/test_issue_7.py") == 0
    (project.work / "tests" / "harness").mkdir(parents=True)
    (project.work / "tests/harness/test_issue_7.py").write_text(
        (pr_tree / "tests/harness/test_issue_7.py").read_text()
    )
    assert pytest_in(project.work, "tests/harness/test_issue_7.py") == 1
    # The pull request.
    (pull,) = github.pulls
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("harness/issue-7", "main")
    assert pull["title"] == "Fix #7: add() subtracts"
    body = pull["body"]
    for section in (
        "Fixes #7.",
        "## Summary",
        "## Why this patch",
        "## Votes",
        "## Reproduction test",
    ):
        assert section in body
    assert solver.reasoning in body
    assert "| `c1` | traj-0 | 2 | ✅ |" in body and "| `c2` | traj-1 | 0 |  |" in body
    assert "Added `tests/harness/test_issue_7.py`" in body and "from calc import add" in body
    assert "12,345 tokens" in body and RUN_URL in body
    # One acknowledgement comment, edited through the stages, ending with the link.
    (ack,) = bot_comments(github)
    first_post = github.calls("POST", r"/issues/7/comments$")[0].body["body"]
    assert "- [x] acknowledged" in first_post and "solving (default settings) ⏳" in first_post
    assert len(github.calls("PATCH", r"/issues/comments/")) == 2
    assert "opened #101" in ack["body"] and "state=done" in ack["body"]
    assert any("opened https://github.com/octo/calc/pull/101" in line for line in logs)
    # The user's checkout is left as it was.
    assert git(project.work, "rev-parse", "HEAD") == project.base
    assert git(project.work, "status", "--porcelain") == "?? tests/"


async def test_untrusted_commenter_is_refused_and_nothing_runs(
    github: FakeGitHub, project: Project, token: str
) -> None:
    factory = Factory(FixingSolver())
    payload = comment_event(
        github, "/harness solve --samples 16", user="drive-by", association="CONTRIBUTOR"
    )
    for _ in range(2):  # a re-delivery does not repeat the answer
        outcome = await handle(github, project, token, payload, factory, event="issue_comment")
        assert outcome.action == "refused"
    assert factory.options == []
    (reply,) = bot_comments(github)
    assert "@drive-by" in reply["body"] and "nothing was started" in reply["body"]
    assert branches(project) == ["main"] and github.calls("POST", r"/pulls$") == []


async def test_labeler_without_write_access_is_refused(
    github: FakeGitHub, project: Project, token: str
) -> None:
    factory = Factory(FixingSolver())
    outcome = await handle(github, project, token, label_event(github, sender="triager"), factory)
    assert outcome.action == "refused" and factory.options == []
    assert github.calls("GET", r"/collaborators/triager/permission$")


async def test_duplicate_delivery_opens_one_pull_request(
    github: FakeGitHub, project: Project, token: str
) -> None:
    solver = FixingSolver()
    payload = label_event(github)
    first = await handle(github, project, token, payload, Factory(solver))
    again = await handle(github, project, token, payload, Factory(solver))
    assert (first.action, again.action) == ("opened", "exists")
    assert len(solver.tasks) == 1 and len(github.pulls) == 1
    assert len(github.calls("POST", r"/pulls$")) == 1 and len(bot_comments(github)) == 1
    # A new request while the pull request is open points at it instead of solving again.
    command = comment_event(github, "/harness solve")
    third = await handle(github, project, token, command, Factory(solver), event="issue_comment")
    assert third.action == "exists" and len(solver.tasks) == 1
    assert "already open: #101" in bot_comments(github)[-1]["body"]


async def test_redelivery_after_a_failure_retries_in_the_same_comment(
    github: FakeGitHub, project: Project, token: str
) -> None:
    payload = label_event(github)
    broken = FixingSolver(fail=RuntimeError("model server went away"))
    with pytest.raises(RuntimeError, match="went away"):
        await handle(github, project, token, payload, Factory(broken))
    assert broken.closed == 1, "a solver that failed is closed too"
    (ack,) = bot_comments(github)
    assert "failed while solving" in ack["body"] and "model server went away" in ack["body"]
    assert RUN_URL in ack["body"] and "state=failed" in ack["body"]

    outcome = await handle(github, project, token, payload, Factory(FixingSolver()))
    assert outcome.action == "opened"
    (ack,) = bot_comments(github)
    assert "opened #101" in ack["body"]


async def test_no_fix_explains_what_was_tried(
    github: FakeGitHub, project: Project, token: str
) -> None:
    solver = NothingSolver()
    payload = label_event(github)
    outcome = await handle(github, project, token, payload, Factory(solver))
    assert outcome.action == "no_patch" and outcome.result is not None
    (note,) = bot_comments(github)
    body = note["body"]
    assert "could not find a fix" in body and "no candidate passed the reproduction tests" in body
    assert "3 candidate patches, 5,000 tokens" in body and "| `c0` | traj-0 | 0 |" in body
    assert RUN_URL in body and str(outcome.result.report_path) in body
    assert branches(project) == ["main"] and github.pulls == []
    # Re-delivered: the answer stands, nothing runs again.
    assert (await handle(github, project, token, payload, Factory(solver))).action == "exists"
    assert len(solver.tasks) == 1


async def test_command_options_reach_the_solver_factory(
    github: FakeGitHub, project: Project, token: str
) -> None:
    factory = Factory(FixingSolver())
    payload = comment_event(
        github, "Please try:\n/harness solve --samples 3 --model m1", association="OWNER"
    )
    defaults = SolveOptions(samples=2, budget_usd=1.0)
    limits = OptionLimits(allowed_models=("m1",))
    outcome = await handle(
        github,
        project,
        token,
        payload,
        factory,
        event="issue_comment",
        defaults=defaults,
        limits=limits,
    )
    assert outcome.action == "opened"
    assert factory.options == [SolveOptions(samples=3, model="m1", budget_usd=1.0)]
    first_post = github.calls("POST", r"/issues/7/comments$")[0].body["body"]
    assert "samples 3, model `m1`, budget $1" in first_post


async def test_invalid_command_is_answered_not_run(
    github: FakeGitHub, project: Project, token: str
) -> None:
    factory = Factory(FixingSolver())
    payload = comment_event(github, "/harness solve --samples 500")
    outcome = await handle(github, project, token, payload, factory, event="issue_comment")
    assert outcome.action == "invalid" and factory.options == []
    (reply,) = bot_comments(github)
    assert "from 1 to 16" in reply["body"] and "Usage: `/harness solve" in reply["body"]


async def test_plain_comments_cost_no_api_calls(
    github: FakeGitHub, project: Project, token: str
) -> None:
    payload = comment_event(github, "thanks, looks good")
    outcome = await handle(
        github, project, token, payload, Factory(FixingSolver()), event="issue_comment"
    )
    assert outcome.action == "ignored" and github.requests == []


async def test_api_5xx_is_retried(github: FakeGitHub, project: Project, token: str) -> None:
    github.fail("POST", r"/pulls$", 502, times=2)
    outcome = await handle(github, project, token, label_event(github), Factory(FixingSolver()))
    assert outcome.action == "opened" and len(github.calls("POST", r"/pulls$")) == 3


async def test_api_down_is_a_clear_failure(
    github: FakeGitHub, project: Project, token: str
) -> None:
    github.fail(
        "POST", r"/issues/7/comments$", 503, times=99, body={"message": "Service Unavailable"}
    )
    factory = Factory(FixingSolver())
    with pytest.raises(GitHubError) as info:
        await handle(github, project, token, label_event(github), factory)
    assert info.value.status == 503 and "after 5 attempts" in info.value.message
    assert "POST /repos/octo/calc/issues/7/comments" in info.value.message
    assert factory.options == []


async def test_secrets_never_reach_github_or_logs(
    github: FakeGitHub, project: Project, token: str
) -> None:
    # A solver that (somehow) echoes the token: everything written is redacted anyway.
    leaky = FixingSolver(reasoning=f"I found the token {token} in the environment")
    logs: list[str] = []
    outcome = await handle(github, project, token, label_event(github), Factory(leaky), logs=logs)
    assert outcome.action == "opened"
    assert "I found the token *** in the environment" in github.pulls[0]["body"]
    sent = json.dumps([r.body for r in github.requests])
    assert token not in sent and token not in "\n".join(logs)
    assert token not in git(project.bare, "log", "-p", "--all")
    # It was sent where it belongs, though: the Authorization header.
    assert github.requests[0].headers["Authorization"] == f"Bearer {token}"


async def test_patch_touching_workflows_is_not_pushed(
    github: FakeGitHub, project: Project, token: str
) -> None:
    sneaky = FixingSolver(patch_path=".github/workflows/ci.yml")
    with pytest.raises(RepoError, match="protected paths"):
        await handle(github, project, token, label_event(github), Factory(sneaky))
    assert branches(project) == ["main"]
    assert "failed while pushing the branch" in bot_comments(github)[0]["body"]


async def test_markers_forged_by_untrusted_users_are_ignored(
    github: FakeGitHub, project: Project, token: str
) -> None:
    payload = label_event(github)
    trigger = parse_event("issues", payload)
    assert isinstance(trigger, Trigger)
    github.add_comment(REPO, ISSUE, f"lol {marker(trigger.key, 'done')}", user="troll")
    outcome = await handle(github, project, token, payload, Factory(FixingSolver()))
    assert outcome.action == "opened"
