"""Fixtures for the bot: a fake GitHub on loopback, a checkout whose origin is a real bare
remote on disk, event payloads shaped like GitHub Actions' ones."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bot.ghserver import FakeGitHub
from tests.bot.solvers import BUGGY
from tests.conftest import git, make_repo

REPO = "octo/calc"
ISSUE = 7


@dataclass
class Project:
    work: Path  # the checked-out repository (as actions/checkout leaves it)
    bare: Path  # its origin
    base: str  # HEAD sha


def new_token() -> str:
    return "ghs_" + secrets.token_hex(16)


def make_project(tmp_path: Path) -> Project:
    seed = tmp_path / "seed"
    make_repo(seed, {"calc.py": BUGGY, "README.md": "# calc\n"})
    bare = tmp_path / "remote" / "calc.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    return Project(work=work, bare=bare, base=git(work, "rev-parse", "HEAD"))


@contextlib.contextmanager
def serve_github(token: str, project: Project) -> Iterator[FakeGitHub]:
    """The fake GitHub with the project's repository, issue 7 and two known users."""
    with FakeGitHub(token) as gh:
        gh.add_repo(REPO, bare=project.bare)
        gh.add_issue(REPO, ISSUE, "add() subtracts", "`add(2, 3)` returns -1 instead of 5.")
        gh.add_comment(REPO, ISSUE, "Same here on 1.2.", user="someone")
        gh.permissions[(REPO, "maintainer")] = "write"
        gh.permissions[(REPO, "triager")] = "triage"
        yield gh


@pytest.fixture
def token() -> str:
    return new_token()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


@pytest.fixture
def github(token: str, project: Project) -> Iterator[FakeGitHub]:
    with serve_github(token, project) as gh:
        yield gh


def _issue(gh: FakeGitHub, number: int = ISSUE) -> dict[str, Any]:
    return {k: v for k, v in gh.issues[(REPO, number)].items() if not k.startswith("_")}


def _repository() -> dict[str, Any]:
    owner, name = REPO.split("/")
    return {"full_name": REPO, "name": name, "owner": {"login": owner}, "default_branch": "main"}


def label_event(
    gh: FakeGitHub,
    *,
    sender: str = "maintainer",
    label: str = "harness",
    updated_at: str = "2024-05-02T08:00:00Z",
) -> dict[str, Any]:
    issue = {**_issue(gh), "updated_at": updated_at}
    return {
        "action": "labeled",
        "issue": issue,
        "label": {"name": label},
        "repository": _repository(),
        "sender": {"login": sender, "type": "User"},
    }


def comment_event(
    gh: FakeGitHub,
    body: str,
    *,
    user: str = "maintainer",
    association: str = "MEMBER",
    number: int = ISSUE,
) -> dict[str, Any]:
    """Also posts the comment on the fake server, as GitHub would have."""
    comment = gh.add_comment(REPO, number, body, user=user, association=association)
    public = {k: v for k, v in comment.items() if not k.startswith("_")}
    return {
        "action": "created",
        "issue": _issue(gh, number),
        "comment": public,
        "repository": _repository(),
        "sender": {"login": user, "type": "User"},
    }


def write_event(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload))
    return path
