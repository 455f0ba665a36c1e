"""`harness bot`: GitHub issues in, pull requests out (GitHub Actions), plus GitHub issue
references for `harness solve`.

    github.py   async REST client (retries, rate limits, errors; the token never leaks)
    models.py   what the endpoints return, as frozen dataclasses
    events.py   event payloads -> Trigger; the `/harness solve [options]` command
    runner.py   GitHubBot: trust check, acknowledgement, solve, push, pull request
    render.py   the markdown it posts, with hidden idempotency markers
    git.py      commit a patch without a work tree, push, cached clones
    testfile.py the reproduction test as a pytest file in the repository
    issues.py   parse_issue_ref, fetch_issue_text, clone_issue_repo, task_from_issue
                (for `harness solve owner/repo#123`)
    redact.py   Redactor: masks secrets in everything written
"""

from harness.bot.events import OptionLimits, SolveOptions
from harness.bot.github import GitHubClient, RateLimited
from harness.bot.issues import (
    IssueRef,
    clone_issue_repo,
    fetch_issue_text,
    parse_issue_ref,
    task_from_issue,
)
from harness.bot.redact import Redactor
from harness.bot.runner import BotConfig, BotOutcome, GitHubBot

__all__ = [
    "BotConfig",
    "BotOutcome",
    "GitHubBot",
    "GitHubClient",
    "IssueRef",
    "OptionLimits",
    "RateLimited",
    "Redactor",
    "SolveOptions",
    "clone_issue_repo",
    "fetch_issue_text",
    "parse_issue_ref",
    "task_from_issue",
]
