"""A fake GitHub REST API on loopback: the few endpoints the bot uses, with GitHub's documented
JSON shapes, request recording and fault injection. Pull requests are checked against the
repository's real bare remote on disk (the head branch must exist there).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT_USER = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
STAMP = "2024-05-01T12:00:00Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    drop: bool = False  # close the connection without replying


class FakeGitHub:
    """`with FakeGitHub(token) as gh:` serves on `gh.api_url` until the block ends."""

    def __init__(self, token: str, *, prefix: str = "", max_per_page: int = 100) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.max_per_page = max_per_page
        self.requests: list[Recorded] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.bare: dict[str, Path] = {}
        self.issues: dict[tuple[str, int], dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self.pulls: list[dict[str, Any]] = []
        self.permissions: dict[tuple[str, str], str] = {}
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ids = 1000
        self._server: ThreadingHTTPServer | None = None

    # -- setup ---------------------------------------------------------------------------------

    def add_repo(self, full_name: str, *, bare: Path | None = None, branch: str = "main") -> None:
        owner, name = full_name.split("/")
        self.repos[full_name] = {
            "id": self._next_id(),
            "name": name,
            "full_name": full_name,
            "owner": {"login": owner, "type": "User"},
            "private": False,
            "default_branch": branch,
            "clone_url": f"https://github.com/{full_name}.git",
            "html_url": f"https://github.com/{full_name}",
        }
        if bare is not None:
            self.bare[full_name] = bare

    def add_issue(
        self, full_name: str, number: int, title: str, body: str, *, user: str = "reporter"
    ) -> dict[str, Any]:
        issue = {
            "id": self._next_id(),
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "user": {"login": user, "type": "User"},
            "labels": [],
            "author_association": "NONE",
            "html_url": f"https://github.com/{full_name}/issues/{number}",
            "created_at": STAMP,
            "updated_at": STAMP,
        }
        self.issues[(full_name, number)] = issue
        return issue

    def add_comment(
        self,
        full_name: str,
        number: int,
        body: str,
        *,
        user: str,
        association: str = "NONE",
        user_type: str = "User",
    ) -> dict[str, Any]:
        comment = self._comment(
            full_name, number, body, {"login": user, "type": user_type}, association
        )
        with self._lock:
            self.comments.append(comment)
        return comment

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        drop: bool = False,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """The next `times` requests matching `method` and the `path` regex get `status`."""
        self.faults.append(
            Fault(
                method,
                re.compile(path),
                status,
                times,
                headers or {},
                body if body is not None else {"message": "Server Error"},
                drop,
            )
        )

    # -- inspection ----------------------------------------------------------------------------

    def issue_comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        return [c for c in self.comments if c["_issue"] == (full_name, number)]

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- server --------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}{self.prefix}"

    def __enter__(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                reply = fake.handle(self.command, self.path, dict(self.headers.items()), raw)
                if reply is None:  # a dropped connection
                    self.close_connection = True
                    self.connection.close()
                    return
                status, headers, body = reply
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- request handling ----------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any] | None:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(Recorded(method, parts.path, query, headers, body))
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path.search(parts.path):
                    fault.times -= 1
                    return None if fault.drop else (fault.status, fault.headers, fault.body)
        if headers.get("Authorization") != f"Bearer {self.token}":
            return (
                401,
                {},
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            )
        if not parts.path.startswith(self.prefix + "/"):
            return 404, {}, {"message": "Not Found"}
        path = parts.path[len(self.prefix) :]
        with self._lock:
            return self._route(method, path, query, body)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        not_found: tuple[int, dict[str, str], Any] = (
            404,
            {},
            {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
        )
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if not m or m[1] not in self.repos:
            return not_found
        repo, rest = m[1], m[2] or ""
        if rest == "" and method == "GET":
            return 200, {}, self.repos[repo]
        if (m2 := re.fullmatch(r"/issues/(\d+)", rest)) and method == "GET":
            issue = self.issues.get((repo, int(m2[1])))
            return (200, {}, issue) if issue else not_found
        if m2 := re.fullmatch(r"/issues/(\d+)/comments", rest):
            key = (repo, int(m2[1]))
            if key not in self.issues:
                return not_found
            if method == "GET":
                return self._page(
                    path, query, [self._public(c) for c in self.comments if c["_issue"] == key]
                )
            if method == "POST":
                if not isinstance(body, dict) or not body.get("body"):
                    return (
                        422,
                        {},
                        {
                            "message": "Validation Failed",
                            "errors": [
                                {
                                    "resource": "IssueComment",
                                    "field": "body",
                                    "code": "missing_field",
                                }
                            ],
                        },
                    )
                comment = self._comment(repo, key[1], body["body"], BOT_USER, "NONE")
                self.comments.append(comment)
                return 201, {}, self._public(comment)
        if (m2 := re.fullmatch(r"/issues/comments/(\d+)", rest)) and method == "PATCH":
            for comment in self.comments:
                if comment["id"] == int(m2[1]) and comment["_issue"][0] == repo:
                    if comment["user"]["type"] != "Bot":
                        return 403, {}, {"message": "Resource not accessible by integration"}
                    comment["body"] = body["body"]
                    comment["updated_at"] = STAMP
                    return 200, {}, self._public(comment)
            return not_found
        if rest == "/pulls" and method == "GET":
            pulls = [
                p
                for p in self.pulls
                if p["_repo"] == repo
                and query.get("state", "open") in (p["state"], "all")
                and ("head" not in query or p["head"]["label"] == query["head"])
            ]
            return self._page(path, query, [self._public(p) for p in pulls])
        if rest == "/pulls" and method == "POST":
            return self._create_pull(repo, body)
        if (m2 := re.fullmatch(r"/collaborators/([^/]+)/permission", rest)) and method == "GET":
            perm = self.permissions.get((repo, m2[1]), "read")
            legacy = {"maintain": "write", "triage": "read"}.get(perm, perm)
            return (
                200,
                {},
                {"permission": legacy, "role_name": perm, "user": {"login": m2[1], "type": "User"}},
            )
        return not_found

    def _create_pull(self, repo: str, body: Any) -> tuple[int, dict[str, str], Any]:
        owner = repo.split("/")[0]
        head, base = body.get("head", ""), body.get("base", "")
        label = head if ":" in head else f"{owner}:{head}"
        branch = label.split(":", 1)[1]
        invalid: dict[str, Any] = {
            "message": "Validation Failed",
            "errors": [],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
        }
        if any(
            p["_repo"] == repo and p["state"] == "open" and p["head"]["label"] == label
            for p in self.pulls
        ):
            invalid["errors"] = [
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"A pull request already exists for {label}.",
                }
            ]
            return 422, {}, invalid
        sha = self._branch_sha(repo, branch)
        if sha is None:
            invalid["errors"] = [{"resource": "PullRequest", "field": "head", "code": "invalid"}]
            return 422, {}, invalid
        number = 100 + len(self.pulls) + 1
        pull = {
            "id": self._next_id(),
            "number": number,
            "state": "open",
            "title": body.get("title", ""),
            "body": body.get("body", ""),
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "head": {"ref": branch, "label": label, "sha": sha},
            "base": {"ref": base},
            "user": BOT_USER,
            "_repo": repo,
        }
        self.pulls.append(pull)
        return 201, {}, self._public(pull)

    def _branch_sha(self, repo: str, branch: str) -> str | None:
        bare = self.bare.get(repo)
        if bare is None:
            return "0" * 40
        proc = subprocess.run(
            ["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip() or None

    def _page(
        self, path: str, query: dict[str, str], items: list[Any]
    ) -> tuple[int, dict[str, str], Any]:
        per_page = min(int(query.get("per_page", 30)), self.max_per_page)
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            nxt = f"{self.api_url}{path}?per_page={per_page}&page={page + 1}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return 200, headers, chunk

    def _comment(
        self, repo: str, number: int, body: str, user: dict[str, Any], association: str
    ) -> dict[str, Any]:
        cid = self._next_id()
        return {
            "id": cid,
            "node_id": f"IC_{cid}",
            "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{cid}",
            "issue_url": f"https://api.github.com/repos/{repo}/issues/{number}",
            "body": body,
            "user": dict(user),
            "author_association": association,
            "created_at": STAMP,
            "updated_at": STAMP,
            "_issue": (repo, number),
        }

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids
