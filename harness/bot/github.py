"""A small async GitHub REST client (httpx): retries, rate limits, clear errors, no token leaks.

Errors are `harness.errors.GitHubError` (with `.status`); `RateLimited` is the subclass for an
exhausted primary or secondary rate limit. The token is sent only to the API origin, and
never appears in messages, reprs or logs.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import httpx

from harness import __version__
from harness.bot.models import (
    Comment,
    Issue,
    PullRequest,
    Repository,
    comment_from_json,
    issue_from_json,
    pull_from_json,
)
from harness.bot.redact import Redactor
from harness.errors import GitHubError

API_URL = "https://api.github.com"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
FULL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
PERMISSION_HINT = (
    "the workflow needs `permissions: {contents: write, issues: write, pull-requests: write}`, "
    "or a token with those scopes"
)

Sleep = Callable[[float], Awaitable[None]]


class RateLimited(GitHubError):
    """The primary or secondary rate limit is exhausted for longer than we are willing to wait."""

    def __init__(self, message: str, *, status: int, reset_at: float | None, hint: str) -> None:
        super().__init__(message, status=status, hint=hint)
        self.reset_at = reset_at


def check_full_name(full_name: str) -> str:
    """`owner/repo`, validated so it can go into an API path as is."""
    if not FULL_NAME.match(full_name) or full_name.split("/")[1] in (".", ".."):
        raise GitHubError(f"not a repository name: {full_name!r}", hint="expected owner/repo")
    return full_name


class GitHubClient:
    """`async with GitHubClient(token, api_url=...) as gh:`; endpoint methods return dataclasses.

    Retries 5xx replies and connection errors with exponential backoff, and rate limits
    (429 / 403 with Retry-After, x-ratelimit-remaining: 0, or a secondary-limit message) by
    waiting what GitHub asks, up to `max_wait_s` per wait.
    """

    def __init__(
        self,
        token: str | None,
        *,
        api_url: str = API_URL,
        max_retries: int = 4,
        max_wait_s: float = 120.0,
        timeout_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self._redact = Redactor([token] if token else [])
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": f"harness-bot/{__version__}",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.api_url + "/",
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,  # a redirect could carry the token to another host
        )

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self.api_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str | int] | None = None,
    ) -> httpx.Response:
        """One API call with retries; a `GitHubError` for any reply >= 400 left at the end."""
        url = self._url(path)
        shown = f"{method} {self._redact(httpx.URL(url).path if '://' in url else '/' + url)}"
        for attempt in range(self.max_retries + 1):
            try:
                resp = await self._http.request(method, url, json=json, params=params)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    detail = self._redact(f"{type(exc).__name__}: {exc}")
                    raise GitHubError(
                        f"{shown}: cannot reach the GitHub API at {self.api_url} "
                        f"after {attempt + 1} attempts ({detail})",
                        hint="check GITHUB_API_URL and the network",
                    ) from exc
                await self._sleep(self._backoff(attempt))
                continue
            if resp.status_code < 400:
                return resp
            wait = self._retry_wait(resp, attempt)
            if wait is None or attempt >= self.max_retries:
                raise self._error(shown, resp, attempts=attempt + 1)
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_json(self, path: str, params: dict[str, str | int] | None = None) -> Any:
        return _json(await self.request("GET", path, params=params))

    async def paginate(
        self, path: str, params: dict[str, str | int] | None = None, *, limit: int = 3000
    ) -> list[Any]:
        """Every item of a list endpoint, following `Link: rel="next"` (same origin only)."""
        items: list[Any] = []
        url: str | None = path
        query: dict[str, str | int] | None = {"per_page": 100, **(params or {})}
        while url is not None and len(items) < limit:
            resp = await self.request("GET", url, params=query)
            page = _json(resp)
            if not isinstance(page, list):
                raise GitHubError(f"GET {path}: expected a list, got {type(page).__name__}")
            items.extend(page)
            url = resp.links.get("next", {}).get("url")
            query = None  # the next link carries its own query
        return items[:limit]

    def _url(self, path: str) -> str:
        if "://" not in path:
            return path.lstrip("/")
        # Absolute URLs (pagination links) must stay on the API origin: the token goes there.
        if not (path == self.api_url or path.startswith(self.api_url + "/")):
            raise GitHubError(
                "refusing to follow a link outside the API", hint=f"expected {self.api_url}"
            )
        return path

    def _backoff(self, attempt: int) -> float:
        return float(min(2**attempt, 30)) + random.uniform(0, 0.5)

    def _retry_wait(self, resp: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying `resp`, or None when it must not be retried."""
        limited = self._rate_limit_wait(resp)
        if limited is not None:
            return limited if limited <= self.max_wait_s else None
        if resp.status_code in RETRY_STATUSES:
            after = _retry_after(resp)
            return min(after, self.max_wait_s) if after is not None else self._backoff(attempt)
        return None

    def _rate_limit_wait(self, resp: httpx.Response) -> float | None:
        if resp.status_code not in (403, 429):
            return None
        after = _retry_after(resp)
        if after is not None:
            return after
        if resp.headers.get("x-ratelimit-remaining") == "0":
            reset = _float(resp.headers.get("x-ratelimit-reset"))
            return max(1.0, reset - self._clock() + 1.0) if reset is not None else 60.0
        if resp.status_code == 429 or "rate limit" in _message(resp).lower():
            return 60.0  # GitHub: "wait for at least one minute before retrying"
        return None

    def _error(self, shown: str, resp: httpx.Response, *, attempts: int) -> GitHubError:
        status = resp.status_code
        message = self._redact(_message(resp) or resp.reason_phrase)
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        wait = self._rate_limit_wait(resp)
        if wait is not None:
            reset = _float(resp.headers.get("x-ratelimit-reset"))
            when = (
                time.strftime("%H:%M:%S UTC", time.gmtime(reset))
                if reset
                else f"in about {wait:.0f} s"
            )
            return RateLimited(
                f"{shown}: GitHub API rate limit exceeded ({status}: {message}); it resets {when}",
                status=status,
                reset_at=reset,
                hint="wait for the reset, or use a token with a higher limit",
            )
        if status == 401:
            return GitHubError(
                f"{shown}: GitHub rejected the token (401: {message})",
                status=status,
                hint="set GITHUB_TOKEN to a valid token (in Actions: secrets.GITHUB_TOKEN)",
            )
        if status == 403:
            hint = PERMISSION_HINT
            if "create or approve pull requests" in message:
                hint = (
                    "enable Settings > Actions > General > Workflow permissions > "
                    "'Allow GitHub Actions to create and approve pull requests'"
                )
            return GitHubError(f"{shown}: forbidden (403: {message})", status=status, hint=hint)
        if status == 404:
            return GitHubError(
                f"{shown}: not found (404)",
                status=status,
                hint="check the owner/repo and number, and that the token can see the "
                "repository (private repositories need a token with access)",
            )
        if status == 422:
            details = "; ".join(self._redact(d) for d in _error_details(resp))
            return GitHubError(
                f"{shown}: GitHub rejected the request (422: {message}"
                + (f": {details})" if details else ")"),
                status=status,
            )
        return GitHubError(f"{shown}: GitHub API error {status}{tried}: {message}", status=status)

    # -- endpoints ---------------------------------------------------------------------------

    async def get_repo(self, full_name: str) -> Repository:
        data = await self.get_json(f"repos/{check_full_name(full_name)}")
        return Repository(
            full_name=str(data["full_name"]),
            default_branch=str(data.get("default_branch") or "main"),
            clone_url=str(data.get("clone_url") or ""),
            private=bool(data.get("private", False)),
        )

    async def get_issue(self, full_name: str, number: int) -> Issue:
        return issue_from_json(
            await self.get_json(f"repos/{check_full_name(full_name)}/issues/{int(number)}")
        )

    async def list_comments(self, full_name: str, number: int) -> list[Comment]:
        path = f"repos/{check_full_name(full_name)}/issues/{int(number)}/comments"
        return [comment_from_json(c) for c in await self.paginate(path)]

    async def create_comment(self, full_name: str, number: int, body: str) -> Comment:
        path = f"repos/{check_full_name(full_name)}/issues/{int(number)}/comments"
        return comment_from_json(_json(await self.request("POST", path, json={"body": body})))

    async def update_comment(self, full_name: str, comment_id: int, body: str) -> Comment:
        path = f"repos/{check_full_name(full_name)}/issues/comments/{int(comment_id)}"
        return comment_from_json(_json(await self.request("PATCH", path, json={"body": body})))

    async def find_pull(
        self, full_name: str, branch: str, *, state: str = "open"
    ) -> PullRequest | None:
        """The pull request whose head is `branch` of this repository, if any."""
        owner = check_full_name(full_name).split("/")[0]
        pulls = await self.get_json(
            f"repos/{full_name}/pulls", {"head": f"{owner}:{branch}", "state": state}
        )
        return pull_from_json(pulls[0]) if pulls else None

    async def create_pull(
        self, full_name: str, *, title: str, head: str, base: str, body: str
    ) -> PullRequest:
        payload = {"title": title, "head": head, "base": base, "body": body}
        path = f"repos/{check_full_name(full_name)}/pulls"
        return pull_from_json(_json(await self.request("POST", path, json=payload)))

    async def get_permission(self, full_name: str, user: str) -> str:
        """`admin`, `maintain`, `write`, `triage`, `read` or `none` for `user` on the repo."""
        if not re.fullmatch(r"[A-Za-z0-9-]+(\[bot\])?", user):
            return "none"
        try:
            data = await self.get_json(
                f"repos/{check_full_name(full_name)}/collaborators/{user}/permission"
            )
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        role = str(data.get("role_name") or "")
        return (
            role
            if role in ("admin", "maintain", "write", "triage", "read")
            else (str(data.get("permission") or "none"))
        )


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise GitHubError(
            f"{resp.request.method} {resp.request.url.path}: the reply is not JSON "
            f"(status {resp.status_code})",
            status=resp.status_code,
        ) from exc


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    return str(data.get("message") or "") if isinstance(data, dict) else ""


def _error_details(resp: httpx.Response) -> list[str]:
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return []
    out = []
    for err in errors:
        if isinstance(err, dict):
            out.append(str(err.get("message") or err.get("code") or err))
        else:
            out.append(str(err))
    return out


def _retry_after(resp: httpx.Response) -> float | None:
    return _float(resp.headers.get("retry-after"))


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
