"""The REST client against the loopback fake: retries, rate limits, errors, pagination, and the
token staying out of every message."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.bot.github import GitHubClient, RateLimited
from harness.errors import GitHubError
from tests.bot.conftest import ISSUE, REPO
from tests.bot.ghserver import FakeGitHub


class Sleeps:
    """Records the waits the client asks for instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(github: FakeGitHub, token: str, sleeps: Sleeps) -> AsyncIterator[GitHubClient]:
    async with GitHubClient(
        token, api_url=github.api_url, sleep=sleeps, clock=lambda: 1000.0, max_wait_s=120
    ) as gh:
        yield gh


def text_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


async def test_sends_the_token_and_parses_documented_shapes(
    client: GitHubClient, github: FakeGitHub, token: str
) -> None:
    repo = await client.get_repo(REPO)
    issue = await client.get_issue(REPO, ISSUE)
    comment = await client.create_comment(REPO, ISSUE, "hello")
    edited = await client.update_comment(REPO, comment.id, "hello again")
    assert (repo.full_name, repo.default_branch) == (REPO, "main")
    assert (issue.number, issue.title, issue.is_pull_request) == (ISSUE, "add() subtracts", False)
    assert (comment.user, comment.user_type) == ("github-actions[bot]", "Bot")
    assert edited.body == "hello again" and edited.id == comment.id
    assert {r.headers["Authorization"] for r in github.requests} == {f"Bearer {token}"}
    assert token not in repr(client)


async def test_retries_5xx_then_succeeds(
    client: GitHubClient, github: FakeGitHub, sleeps: Sleeps
) -> None:
    github.fail("POST", r"/comments$", 502, times=2)
    comment = await client.create_comment(REPO, ISSUE, "after two 502s")
    assert comment.body == "after two 502s"
    assert len(github.calls("POST", r"/comments$")) == 3
    assert len(sleeps.waits) == 2 and sleeps.waits[0] < sleeps.waits[1]


async def test_5xx_exhausted_is_a_clear_error(
    client: GitHubClient, github: FakeGitHub, token: str
) -> None:
    github.fail("GET", r"/issues/7$", 503, times=99, body={"message": "Service Unavailable"})
    with pytest.raises(GitHubError) as info:
        await client.get_issue(REPO, ISSUE)
    assert info.value.status == 503
    assert "GET /repos/octo/calc/issues/7" in info.value.message
    assert "after 5 attempts" in info.value.message and "Service Unavailable" in info.value.message
    assert len(github.calls("GET", r"/issues/7$")) == 5
    assert token not in text_of(info.value)


async def test_connection_drops_are_retried(
    client: GitHubClient, github: FakeGitHub, token: str
) -> None:
    github.fail("GET", r"/issues/7$", 0, times=1, drop=True)
    assert (await client.get_issue(REPO, ISSUE)).number == ISSUE
    github.fail("GET", r"/issues/7$", 0, times=99, drop=True)
    with pytest.raises(GitHubError, match="cannot reach the GitHub API") as info:
        await client.get_issue(REPO, ISSUE)
    assert token not in text_of(info.value)


async def test_secondary_rate_limit_honours_retry_after(
    client: GitHubClient, github: FakeGitHub, sleeps: Sleeps
) -> None:
    github.fail(
        "POST",
        r"/comments$",
        403,
        headers={"Retry-After": "7"},
        body={"message": "You have exceeded a secondary rate limit."},
    )
    await client.create_comment(REPO, ISSUE, "x")
    assert sleeps.waits == [7.0]


async def test_primary_rate_limit_waits_until_reset(
    client: GitHubClient, github: FakeGitHub, sleeps: Sleeps
) -> None:
    github.fail(
        "GET",
        r"/issues/7$",
        429,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"},
        body={"message": "API rate limit exceeded"},
    )
    await client.get_issue(REPO, ISSUE)
    assert sleeps.waits == [31.0]  # reset (1030) - now (1000) + 1


async def test_rate_limit_too_far_away_fails_at_once(
    client: GitHubClient, github: FakeGitHub, sleeps: Sleeps
) -> None:
    github.fail(
        "GET",
        r"/issues/7$",
        403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "4600"},
        body={"message": "API rate limit exceeded for installation"},
    )
    with pytest.raises(RateLimited) as info:
        await client.get_issue(REPO, ISSUE)
    assert sleeps.waits == []
    assert info.value.reset_at == 4600.0 and "rate limit exceeded" in info.value.message


@pytest.mark.parametrize(
    ("status", "body", "expected", "hint"),
    [
        (403, {"message": "Resource not accessible by integration"}, "forbidden", "permissions"),
        (404, {"message": "Not Found"}, "not found", "private repositories"),
        (
            422,
            {
                "message": "Validation Failed",
                "errors": [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": "A pull request already exists for octo:b.",
                    }
                ],
            },
            "A pull request already exists",
            None,
        ),
    ],
)
async def test_error_statuses_are_explained(
    client: GitHubClient,
    github: FakeGitHub,
    token: str,
    status: int,
    body: dict[str, object],
    expected: str,
    hint: str | None,
) -> None:
    github.fail("POST", r"/pulls$", status, body=body)
    with pytest.raises(GitHubError) as info:
        await client.create_pull(REPO, title="t", head="b", base="main", body="")
    assert info.value.status == status and expected in info.value.message
    if hint is not None:
        assert hint in (info.value.hint or "")
    assert len(github.calls("POST", r"/pulls$")) == 1  # 4xx is not retried
    assert token not in text_of(info.value)


async def test_bad_token_is_401_without_the_token(github: FakeGitHub, token: str) -> None:
    wrong = token[::-1]
    async with GitHubClient(wrong, api_url=github.api_url) as gh:
        with pytest.raises(GitHubError) as info:
            await gh.get_issue(REPO, ISSUE)
    assert info.value.status == 401 and "rejected the token" in info.value.message
    assert "GITHUB_TOKEN" in (info.value.hint or "")
    assert wrong not in text_of(info.value)


async def test_pagination_follows_link_headers(client: GitHubClient, github: FakeGitHub) -> None:
    github.max_per_page = 2
    for i in range(4):
        github.add_comment(REPO, ISSUE, f"comment {i}", user="u")
    comments = await client.list_comments(REPO, ISSUE)
    assert [c.body for c in comments][-4:] == [f"comment {i}" for i in range(4)]
    assert len(comments) == 5 and len(github.calls("GET", r"/comments$")) == 3


async def test_never_follows_links_off_the_api(client: GitHubClient, github: FakeGitHub) -> None:
    with pytest.raises(GitHubError, match="outside the API"):
        await client.paginate("https://evil.example/repos/octo/calc/issues/7/comments")
    assert github.requests == []


@pytest.fixture
def enterprise(token: str) -> Iterator[FakeGitHub]:
    with FakeGitHub(token, prefix="/api/v3") as gh:
        gh.add_repo(REPO)
        gh.add_issue(REPO, 1, "on GHE", "body")
        yield gh


async def test_enterprise_api_prefix(enterprise: FakeGitHub, token: str) -> None:
    async with GitHubClient(token, api_url=enterprise.api_url + "/") as gh:
        assert (await gh.get_issue(REPO, 1)).title == "on GHE"
    assert enterprise.requests[0].path == "/api/v3/repos/octo/calc/issues/1"


async def test_permission_lookup(client: GitHubClient, github: FakeGitHub) -> None:
    assert await client.get_permission(REPO, "maintainer") == "write"
    assert await client.get_permission(REPO, "triager") == "triage"
    assert await client.get_permission(REPO, "stranger") == "read"
    assert await client.get_permission(REPO, "../../x") == "none"


async def test_rejects_bad_repository_names(client: GitHubClient) -> None:
    with pytest.raises(GitHubError, match="not a repository name"):
        await client.get_issue("octo/../../user", 1)


async def test_actions_not_allowed_to_open_pull_requests_gets_the_setting_named(
    client: GitHubClient, github: FakeGitHub
) -> None:
    github.fail(
        "POST",
        r"/pulls$",
        403,
        body={"message": "GitHub Actions is not permitted to create or approve pull requests."},
    )
    with pytest.raises(GitHubError) as info:
        await client.create_pull(REPO, title="t", head="b", base="main", body="")
    assert "Allow GitHub Actions to create and approve pull requests" in (info.value.hint or "")
