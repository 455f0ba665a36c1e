"""What the GitHub REST endpoints return, as frozen dataclasses (only the fields we use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Repository:
    full_name: str
    default_branch: str
    clone_url: str
    private: bool = False


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str
    user: str
    state: str
    html_url: str
    is_pull_request: bool = False


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    user: str
    user_type: str  # "User" or "Bot"
    author_association: str
    html_url: str


@dataclass(frozen=True)
class PullRequest:
    number: int
    html_url: str
    state: str
    head: str  # branch name


def issue_from_json(data: Any) -> Issue:
    return Issue(
        number=int(data["number"]),
        title=str(data.get("title") or ""),
        body=str(data.get("body") or ""),
        user=str((data.get("user") or {}).get("login") or ""),
        state=str(data.get("state") or "open"),
        html_url=str(data.get("html_url") or ""),
        is_pull_request=data.get("pull_request") is not None,
    )


def comment_from_json(data: Any) -> Comment:
    user = data.get("user") or {}
    return Comment(
        id=int(data["id"]),
        body=str(data.get("body") or ""),
        user=str(user.get("login") or ""),
        user_type=str(user.get("type") or "User"),
        author_association=str(data.get("author_association") or "NONE"),
        html_url=str(data.get("html_url") or ""),
    )


def pull_from_json(data: Any) -> PullRequest:
    return PullRequest(
        number=int(data["number"]),
        html_url=str(data.get("html_url") or ""),
        state=str(data.get("state") or "open"),
        head=str((data.get("head") or {}).get("ref") or ""),
    )
