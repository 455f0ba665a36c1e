"""`harness bot github`: turn one GitHub Actions event into an acknowledgement, a solve run on
the checked-out repository, and a pull request (or an explanation of why there is none).

Idempotency: every comment the bot writes carries a hidden marker with the delivery's key and
state; a re-delivered event finds it (and the open pull request of the branch) and does not
solve or open a second pull request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.bot import render
from harness.bot.events import (
    Ignored,
    OptionLimits,
    SolveOptions,
    Trigger,
    parse_event,
)
from harness.bot.git import Author, auth_env, check_repo_path, commit_patch, head_sha, push_branch
from harness.bot.github import GitHubClient
from harness.bot.issues import IssueRef, fetch_issue_text
from harness.bot.models import Comment, PullRequest
from harness.bot.redact import Redactor
from harness.bot.testfile import repository_test
from harness.errors import ConfigError, GitHubError, HarnessError
from harness.types import Solver, SolveResult, Task

SolverFactory = Callable[[SolveOptions], Solver]
Action = Literal["ignored", "refused", "invalid", "exists", "opened", "no_patch"]
# States after which a re-delivered event does nothing; "failed" and the in-progress states
# ("solving", "pushing": a run that died) are retried, reusing the same comment.
FINAL_STATES = frozenset({"done", "no_patch", "refused", "invalid"})
# Repository permissions, weakest first. Org membership or an author_association says
# nothing about them: only the collaborator permission endpoint does.
PERMISSIONS = ("none", "read", "triage", "write", "maintain", "admin")
Permission = Literal["write", "maintain", "admin"]


@dataclass(frozen=True)
class BotConfig:
    label: str = "harness"
    min_permission: Permission = "write"  # who may trigger a run (and whose markers count)
    branch: str = "harness/issue-{number}"
    test_path: str = "tests/harness/test_issue_{number}.py"
    defaults: SolveOptions = field(default_factory=SolveOptions)
    limits: OptionLimits = field(default_factory=OptionLimits)
    remote: str = "origin"
    server_url: str = "https://github.com"  # git credentials are scoped to this URL
    run_url: str | None = None  # the Actions run page, linked from comments
    author: Author = field(default_factory=Author)
    protected_paths: tuple[str, ...] = (".github/workflows/",)

    def __post_init__(self) -> None:
        if self.min_permission not in PERMISSIONS[3:]:
            raise ConfigError(
                f"minimum permission {self.min_permission!r} is not write, maintain or admin",
                hint="anyone below write access must never start a run",
            )

    def allows(self, permission: str) -> bool:
        rank = PERMISSIONS.index(permission) if permission in PERMISSIONS else 0
        return rank >= PERMISSIONS.index(self.min_permission)


@dataclass(frozen=True)
class BotOutcome:
    action: Action
    detail: str
    pull_url: str | None = None
    result: SolveResult | None = None


class GitHubBot:
    """Handles one event. The token is used for git pushes only; the solver never sees it."""

    def __init__(
        self,
        client: GitHubClient,
        solver_factory: SolverFactory,
        config: BotConfig,
        *,
        repo: Path,
        run_root: Path,
        token: str | None,
        redact: Redactor,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.gh = client
        self.solver_factory = solver_factory
        self.config = config
        self.repo = repo
        self.run_root = run_root
        self._token = token
        self._redact = redact
        self._log = log
        self._permissions: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"GitHubBot(repo={str(self.repo)!r})"

    def log(self, message: str) -> None:
        self._log(self._redact(message))

    async def handle(self, event_name: str, payload: Mapping[str, Any]) -> BotOutcome:
        parsed = parse_event(
            event_name, payload, label=self.config.label, limits=self.config.limits
        )
        if isinstance(parsed, Ignored):
            self.log(f"ignored: {parsed.reason}")
            return BotOutcome("ignored", parsed.reason)
        trigger = parsed
        number = trigger.issue.number
        self.log(f"{trigger.kind} trigger by @{trigger.actor} on {trigger.repo}#{number}")
        permission = await self._permission(trigger.repo, trigger.actor)
        previous, state = await self._find_marked_comment(trigger)
        if not self.config.allows(permission):
            if previous is None:
                await self._comment(
                    trigger, render.refused(trigger.key, trigger.actor, self.config.min_permission)
                )
            return BotOutcome(
                "refused",
                f"@{trigger.actor} has {permission} permission on {trigger.repo}; "
                f"{self.config.min_permission} is needed",
            )
        if trigger.problem is not None:
            if previous is None:
                await self._comment(
                    trigger, render.invalid(trigger.key, trigger.actor, trigger.problem)
                )
            return BotOutcome("invalid", trigger.problem)
        branch = _fill(self.config.branch, number)
        existing = await self.gh.find_pull(trigger.repo, branch)
        if existing is not None:
            body = render.opened(
                trigger.key,
                existing.number,
                links=self._links(None),
                existed=True,
            )
            if state not in FINAL_STATES:
                await self._upsert(trigger, previous, body)
            return BotOutcome(
                "exists", f"pull request #{existing.number} is open", existing.html_url
            )
        if state in FINAL_STATES:
            self.log(f"already handled (state {state}); nothing to do")
            return BotOutcome("exists", f"this delivery was already handled ({state})")
        via = f"the `{self.config.label}` label" if trigger.kind == "label" else "`/harness solve`"
        options = self.config.defaults.merged(trigger.options)

        def show(stage: Literal["solving", "pushing"]) -> str:
            return render.progress(
                trigger.key,
                stage,
                who=trigger.actor,
                via=via,
                options=options,
                links=self._links(None),
            )

        ack = await self._upsert(trigger, previous, show("solving"))
        stage = "preparing the run"
        result: SolveResult | None = None
        try:
            task, run_dir = await self._prepare(trigger)
            stage = "solving"
            self.log(f"solving {task.task_id} at {task.base_commit[:12]} into {run_dir}")
            result = await self._solve(task, run_dir, options)
            if result.status != "patched" or not result.patch.strip():
                body = render.no_patch(trigger.key, result, links=self._links(result))
                await self._edit(trigger, ack, body)
                return BotOutcome("no_patch", result.message or result.status, result=result)
            stage = "pushing the branch"
            await self._edit(trigger, ack, show("pushing"))
            pull = await self._publish(trigger, branch, task.base_commit, result)
        except Exception as exc:
            error = exc.message if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
            self.log(f"failed while {stage}: {error}")
            body = render.failed(trigger.key, stage=stage, error=error, links=self._links(result))
            try:
                await self._edit(trigger, ack, body)
            except HarnessError as report_exc:  # keep the original error
                self.log(f"could not report the failure: {report_exc.message}")
            raise
        await self._edit(
            trigger,
            ack,
            render.opened(trigger.key, pull.number, links=self._links(result), existed=False),
        )
        self.log(f"opened {pull.html_url}")
        return BotOutcome("opened", f"pull request #{pull.number}", pull.html_url, result)

    async def _prepare(self, trigger: Trigger) -> tuple[Task, Path]:
        """The task (issue text with comments, checkout at HEAD) and its run directory."""
        ref = IssueRef(trigger.owner, trigger.repo.split("/")[1], trigger.issue.number)
        title, text = await fetch_issue_text(self.gh, ref)
        task = Task(
            task_id=ref.task_id,
            issue=text,
            repo=str(self.repo),
            base_commit=await head_sha(self.repo),
            title=title,
            metadata={"github_issue": str(ref), "trigger": trigger.key},
        )
        return task, self.run_root / f"{ref.task_id}-{trigger.key}"

    async def _solve(self, task: Task, run_dir: Path, options: SolveOptions) -> SolveResult:
        """A solver built for this trigger solves the task, and is closed after it."""
        solver = self.solver_factory(options)
        try:
            return await solver.solve(task, run_dir)
        finally:
            await solver.aclose()

    async def _publish(
        self, trigger: Trigger, branch: str, base: str, result: SolveResult
    ) -> PullRequest:
        number = trigger.issue.number
        files: dict[str, str] = {}
        test_path: str | None = None
        if result.test_verified and result.test is not None:
            test_path = check_repo_path(_fill(self.config.test_path, number))
            files[test_path] = repository_test(result.test, test_path, number)
        title = f"Fix #{number}: {trigger.issue.title}"[:250]
        message = f"{title}\n\nProposed by harness for #{number}.\n"
        sha, changed = await commit_patch(
            self.repo,
            base,
            result.patch,
            files=files,
            message=self._redact(message),
            author=self.config.author,
            protected=self.config.protected_paths,
        )
        env = auth_env(self._token, self.config.server_url)
        await push_branch(
            self.repo, sha, branch, remote=self.config.remote, env=env, redact=self._redact
        )
        self.log(f"pushed {sha[:12]} to {branch}")
        body = render.pull_body(
            trigger.key,
            issue_number=number,
            result=result,
            changed=changed,
            test_path=test_path,
            links=self._links(result),
        )
        base_branch = (
            trigger.default_branch or (await self.gh.get_repo(trigger.repo)).default_branch
        )
        try:
            return await self.gh.create_pull(
                trigger.repo,
                title=self._redact(title),
                head=branch,
                base=base_branch,
                body=self._redact(body),
            )
        except GitHubError as exc:
            if exc.status != 422:
                raise
            # "A pull request already exists": a concurrent delivery won the race.
            existing = await self.gh.find_pull(trigger.repo, branch)
            if existing is None:
                raise
            return existing

    async def _permission(self, repo: str, user: str) -> str:
        """`user`'s permission on `repo`, asked of the API once per handled event."""
        if user not in self._permissions:
            self._permissions[user] = await self.gh.get_permission(repo, user)
        return self._permissions[user]

    async def _find_marked_comment(self, trigger: Trigger) -> tuple[Comment | None, str | None]:
        """The bot's earlier comment for this delivery and its state; markers in comments of
        users who could not trigger a run don't count (they could forge one)."""
        for comment in await self.gh.list_comments(trigger.repo, trigger.issue.number):
            found = render.read_marker(comment.body)
            if found is None or found[0] != trigger.key:
                continue
            if comment.user_type == "Bot" or self.config.allows(
                await self._permission(trigger.repo, comment.user)
            ):
                return comment, found[1]
        return None, None

    def _links(self, result: SolveResult | None) -> render.Links:
        return render.Links(self.config.run_url, result.report_path if result else None)

    async def _comment(self, trigger: Trigger, body: str) -> Comment:
        return await self.gh.create_comment(trigger.repo, trigger.issue.number, self._redact(body))

    async def _edit(self, trigger: Trigger, comment: Comment, body: str) -> Comment:
        return await self.gh.update_comment(trigger.repo, comment.id, self._redact(body))

    async def _upsert(self, trigger: Trigger, previous: Comment | None, body: str) -> Comment:
        if previous is None:
            return await self._comment(trigger, body)
        return await self._edit(trigger, previous, body)


def _fill(template: str, number: int) -> str:
    return template.replace("{number}", str(number))
