"""GitHub issues for `harness solve`: references, issue text, and cached clones of a real
(local, bare) repository standing in for github.com."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.bot.git import auth_env
from harness.bot.github import GitHubClient
from harness.bot.issues import (
    IssueRef,
    clone_issue_repo,
    fetch_issue_text,
    parse_issue_ref,
    task_from_issue,
)
from harness.bot.redact import Redactor
from harness.errors import RepoError, TaskError
from tests.bot.conftest import ISSUE, REPO, Project
from tests.bot.ghserver import FakeGitHub
from tests.conftest import git, make_repo


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("octo/calc#7", IssueRef("octo", "calc", 7)),
        ("  my-org/some.repo_x#123 ", IssueRef("my-org", "some.repo_x", 123)),
        (
            "https://github.com/octo/calc/issues/7",
            IssueRef("octo", "calc", 7, "https://github.com"),
        ),
        (
            "https://github.com/octo/calc/issues/7/?x=1#issuecomment-9",
            IssueRef("octo", "calc", 7, "https://github.com"),
        ),
        (
            "https://ghe.corp.example/team/tool/issues/42",
            IssueRef("team", "tool", 42, "https://ghe.corp.example"),
        ),
    ],
)
def test_parse_issue_ref(text: str, expected: IssueRef) -> None:
    ref = parse_issue_ref(text)
    assert ref == expected
    assert str(ref) == f"{expected.owner}/{expected.repo}#{expected.number}"


@pytest.mark.parametrize(
    "text",
    [
        "octo/calc",
        "octo#7",
        "octo/calc#0",
        "octo/calc#x",
        "octo/../etc#1",
        "https://github.com/octo/calc/pull/7",
        "ftp://github.com/octo/calc/issues/7",
        "https://github.com/octo/calc/issues/7/comments",
        "-bad/calc#1",
    ],
)
def test_parse_issue_ref_rejects(text: str) -> None:
    with pytest.raises(TaskError, match=r"owner/repo#123|not a repository|start at 1"):
        parse_issue_ref(text)


async def test_fetch_issue_text(github: FakeGitHub, token: str) -> None:
    github.add_comment(
        REPO,
        ISSUE,
        "working on it <!-- harness-bot key=k state=solving -->",
        user="github-actions[bot]",
        user_type="Bot",
    )
    github.add_comment(
        REPO,
        ISSUE,
        "/harness solve --samples 2\nAlso breaks add(1, 1).",
        user="maintainer",
        association="MEMBER",
    )
    async with GitHubClient(token, api_url=github.api_url) as gh:
        title, text = await fetch_issue_text(gh, parse_issue_ref("octo/calc#7"))
    assert title == "add() subtracts"
    assert text.startswith("# add() subtracts\n\n`add(2, 3)` returns -1 instead of 5.")
    assert "## Comment by @someone\n\nSame here on 1.2." in text
    assert "## Comment by @maintainer\n\nAlso breaks add(1, 1)." in text
    assert "harness-bot" not in text and "--samples" not in text


async def test_fetch_missing_issue_is_a_404(github: FakeGitHub, token: str) -> None:
    async with GitHubClient(token, api_url=github.api_url) as gh:
        with pytest.raises(Exception, match="not found") as info:
            await fetch_issue_text(gh, parse_issue_ref("octo/calc#999"))
    assert getattr(info.value, "status", None) == 404


async def test_clone_issue_repo_caches_and_updates(tmp_path: Path, cache_dir: Path) -> None:
    # A directory laid out like a git server: <server>/<owner>/<repo>.git
    server = tmp_path / "server"
    seed = tmp_path / "seed"
    make_repo(seed, {"calc.py": "v1\n"})
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server / "octo" / "calc.git"))
    ref = parse_issue_ref("octo/calc#7")

    first = await clone_issue_repo(ref, cache_dir, server_url=str(server))
    assert (first / "calc.py").read_text() == "v1\n"
    assert first.is_relative_to(cache_dir)

    new = make_repo(seed, {"calc.py": "v2\n"}, message="v2")
    git(seed, "push", "-q", str(server / "octo" / "calc.git"), "main")
    (first / "scratch.txt").write_text("left behind")
    second = await clone_issue_repo(ref, cache_dir, server_url=str(server))
    assert second == first
    assert git(second, "rev-parse", "HEAD") == new
    assert (second / "calc.py").read_text() == "v2\n" and not (second / "scratch.txt").exists()


async def test_clone_failure_is_a_repo_error_without_the_token(
    tmp_path: Path, cache_dir: Path, token: str
) -> None:
    ref = parse_issue_ref("octo/missing#1")
    with pytest.raises(RepoError, match="git clone failed") as info:
        await clone_issue_repo(ref, cache_dir, server_url=str(tmp_path / "nowhere"), token=token)
    assert token not in str(info.value)


def test_git_credentials_are_scoped_and_redactable(token: str) -> None:
    env = auth_env(token, "https://github.com/")
    assert env["GIT_CONFIG_KEY_1"] == "http.https://github.com/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == ""  # resets headers persisted by actions/checkout
    assert token not in env["GIT_CONFIG_VALUE_1"]  # base64, but...
    assert Redactor([token])(env["GIT_CONFIG_VALUE_1"]) == "AUTHORIZATION: basic ***"
    assert auth_env(token, "/srv/git") == {} and auth_env(None, "https://github.com") == {}


async def test_task_from_issue_clones_when_no_repo_is_given(
    tmp_path: Path, cache_dir: Path, github: FakeGitHub, token: str, project: Project
) -> None:
    server = tmp_path / "server"
    git(tmp_path, "clone", "-q", "--bare", str(project.bare), str(server / "octo" / "calc.git"))
    ref = parse_issue_ref("https://github.com/octo/calc/issues/7")
    ref = IssueRef(ref.owner, ref.repo, ref.number)  # as if given as octo/calc#7
    async with GitHubClient(token, api_url=github.api_url) as gh:
        cloned = await task_from_issue(
            gh, ref, repo=None, cache_dir=cache_dir, server_url=str(server)
        )
        given = await task_from_issue(gh, ref, repo=project.work, cache_dir=cache_dir)
    assert cloned.task_id == given.task_id == "octo__calc-7"
    assert cloned.base_commit == given.base_commit == project.base
    assert Path(cloned.repo).is_relative_to(cache_dir) and given.repo == str(project.work)
    assert cloned.title == "add() subtracts" and "Same here on 1.2." in cloned.issue
    assert cloned.metadata == {"github_issue": "octo/calc#7"}


def test_redactor_masks_environment_secrets() -> None:
    redact = Redactor.from_environ(
        {
            "OPENAI_API_KEY": "sk-abcdefgh123",
            "HOME": "/root",
            "TOKENIZERS_PARALLELISM": "false",
            "MY_SECRET": "hunter2hunter2",
        },
        extra=["ghs_tokentoken"],
    )
    text = "key sk-abcdefgh123, pw hunter2hunter2, tok ghs_tokentoken, home /root, false"
    assert redact(text) == "key ***, pw ***, tok ***, home /root, false"
    assert "sk-abc" not in repr(redact)
