"""Repositories: local mirrors used in place, URL templates cloned once into the cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import RepoError
from harness.evals.repos import RepoCache
from tests.evals.conftest import _commit, make_project


async def test_local_mirror_is_used_in_place(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    base = project.records[0]["base_commit"]
    cache = RepoCache(tmp_path / "cache", project.mirror)
    assert await cache.local("harness-tests/calc", [base]) == project.repo
    checkout = await cache.checkout("harness-tests/calc", base)
    assert (checkout / "calc" / "__init__.py").is_file()
    shallow = subprocess.run(
        ["git", "rev-list", "--count", "HEAD"], cwd=checkout, capture_output=True, text=True
    )
    assert shallow.stdout.strip() == "1"  # no history for an agent to dig through
    with pytest.raises(RepoError, match="unknown commit"):
        await cache.local("harness-tests/calc", ["f" * 40])


async def test_missing_mirror_and_bad_template(tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache", str(tmp_path / "none" / "{owner}+{name}"))
    with pytest.raises(RepoError, match="no mirror of o/n") as info:
        await cache.local("o/n", ["HEAD"])
    assert info.value.hint and "git clone --mirror" in info.value.hint
    with pytest.raises(RepoError, match="unknown placeholder"):
        RepoCache(tmp_path, "/srv/{org}/{name}").location("o/n")


async def test_url_template_clones_once_and_fetches_new_commits(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    url = "file://" + str(tmp_path / "p" / "mirrors" / "{owner}+{name}" / "repo")
    cache = RepoCache(tmp_path / "cache", url)
    base = project.records[0]["base_commit"]
    clone = await cache.local("harness-tests/calc", [base])
    assert clone == tmp_path / "cache" / "repos" / "harness-tests+calc.git"
    assert (clone / "HEAD").is_file() and clone != project.repo
    newer = _commit(project.repo, {"NEWS": "1\n"}, "news")  # upstream moves on
    assert await cache.local("harness-tests/calc", [newer]) == clone
    with pytest.raises(RepoError, match="could not clone o/n"):
        await RepoCache(tmp_path / "c2", "file:///nonexistent/{owner}/{name}").local("o/n", ["x"])


async def test_a_mirror_missing_a_blob_is_named_incomplete(tmp_path: Path) -> None:
    # Mirrors that leave out large files (astropy's IERS tables here) hold the commit but
    # not its whole tree: the checkout fails and says which object is missing, and why.
    project = make_project(tmp_path)
    base = project.records[0]["base_commit"]
    blob = subprocess.run(
        ["git", "rev-parse", f"{base}:calc/__init__.py"],
        cwd=project.repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (project.repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    cache = RepoCache(tmp_path / "cache", project.mirror)
    with pytest.raises(
        RepoError, match=rf"lacks object {blob} \(calc/__init__.py\).*incomplete"
    ) as info:
        await cache.checkout("harness-tests/calc", base)
    assert info.value.hint and "complete the mirror" in info.value.hint
