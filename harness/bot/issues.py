"""GitHub issues as task input: parse `owner/repo#123` or an issue URL, fetch the issue text,
and clone the repository into the cache when the user gave no `--repo`; `task_from_issue`
does all three for `harness solve`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.bot.git import auth_env, clone_cached, clone_url
from harness.bot.github import GitHubClient
from harness.bot.models import Comment, Issue
from harness.bot.redact import Redactor
from harness.errors import TaskError
from harness.sandboxes.checkout import resolve_commit
from harness.types import Task

SHORT_REF = re.compile(
    r"^(?P<owner>[A-Za-z0-9][A-Za-z0-9-]{0,38})/(?P<repo>[A-Za-z0-9._-]{1,100})"
    r"#(?P<number>[0-9]{1,9})$"
)
URL_PATH = re.compile(
    r"^/(?P<owner>[A-Za-z0-9][A-Za-z0-9-]{0,38})/(?P<repo>[A-Za-z0-9._-]{1,100})"
    r"/issues/(?P<number>[0-9]{1,9})/?$"
)
# Comments carrying this marker are the bot's own progress notes, not part of the issue.
BOT_MARKER = "<!-- harness-bot"


@dataclass(frozen=True)
class IssueRef:
    owner: str
    repo: str
    number: int
    server_url: str | None = None  # set when parsed from a URL (GitHub Enterprise hosts)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def task_id(self) -> str:
        """SWE-bench style: `owner__repo-123`."""
        return f"{self.owner}__{self.repo}-{self.number}"

    def __str__(self) -> str:
        return f"{self.full_name}#{self.number}"


def parse_issue_ref(text: str) -> IssueRef:
    """`owner/repo#123` or `https://<host>/owner/repo/issues/123` (query / fragment ignored)."""
    text = text.strip()
    if "://" in text:
        parts = urlsplit(text)
        match = URL_PATH.match(parts.path)
        if parts.scheme in ("http", "https") and parts.netloc and match:
            return _ref(match, server_url=f"{parts.scheme}://{parts.netloc}")
    else:
        match = SHORT_REF.match(text)
        if match:
            return _ref(match, server_url=None)
    raise TaskError(
        f"not a GitHub issue reference: {text!r}",
        hint="use owner/repo#123 or https://github.com/owner/repo/issues/123",
    )


def _ref(match: re.Match[str], *, server_url: str | None) -> IssueRef:
    repo = match["repo"].removesuffix(".git")
    if repo in (".", "..", ""):
        raise TaskError(f"not a repository name: {repo!r}")
    number = int(match["number"])
    if number < 1:
        raise TaskError("issue numbers start at 1")
    return IssueRef(match["owner"], repo, number, server_url)


def format_issue_text(issue: Issue, comments: list[Comment]) -> str:
    """Title, body and the human comments, as one markdown text for the agents."""
    parts = [f"# {issue.title}".rstrip(), issue.body.strip() or "(no description)"]
    for comment in comments:
        if BOT_MARKER in comment.body:
            continue
        # `/harness ...` command lines are addressed to the bot; keep the rest of the comment.
        lines = [ln for ln in comment.body.splitlines() if not ln.lstrip().startswith("/harness")]
        body = "\n".join(lines).strip()
        if body:
            parts.append(f"## Comment by @{comment.user}\n\n{body}")
    return "\n\n".join(parts) + "\n"


async def fetch_issue_text(client: GitHubClient, ref: IssueRef) -> tuple[str, str]:
    """(title, text): the text holds the title, the body and the comments."""
    issue = await client.get_issue(ref.full_name, ref.number)
    comments = await client.list_comments(ref.full_name, ref.number)
    return issue.title, format_issue_text(issue, comments)


async def clone_issue_repo(
    ref: IssueRef,
    cache_dir: Path,
    *,
    server_url: str = "https://github.com",
    token: str | None = None,
) -> Path:
    """A cached clone of the issue's repository (default branch checked out).

    `server_url` is GITHUB_SERVER_URL's value; a URL-parsed ref's own host wins. The token,
    if given, authenticates the clone (private repositories) and is scoped to that server.
    """
    server = ref.server_url or server_url
    redact = Redactor([token] if token else [])
    return await clone_cached(
        clone_url(ref.full_name, server),
        cache_dir,
        env=auth_env(token, server),
        redact=redact,
    )


async def task_from_issue(
    client: GitHubClient,
    ref: IssueRef,
    *,
    repo: Path | None,
    cache_dir: Path,
    commit: str = "HEAD",
    server_url: str = "https://github.com",
    token: str | None = None,
) -> Task:
    """The Task for `harness solve owner/repo#123`: the issue text, and `repo` (or a cached
    clone of the issue's repository when None) at `commit`."""
    title, text = await fetch_issue_text(client, ref)
    if repo is None:
        repo = await clone_issue_repo(ref, cache_dir, server_url=server_url, token=token)
    return Task(
        task_id=ref.task_id,
        issue=text,
        repo=str(repo),
        base_commit=await resolve_commit(repo, commit),
        title=title,
        metadata={"github_issue": str(ref)},
    )
