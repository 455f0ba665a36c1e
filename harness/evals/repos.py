"""Repositories of a data set: cloned from GitHub once (cached), or read from local mirrors.

`--git-mirror TEMPLATE` names where a repository lives, with `{owner}` and `{name}` filled
in: a local path (used in place, never copied) or a URL (cloned into the cache like GitHub).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from harness.errors import RepoError
from harness.evals.locks import host_lock
from harness.sandboxes.checkout import cached_checkout, git, resolve_commit

GITHUB = "https://github.com/{owner}/{name}.git"
_UNREADABLE = re.compile(r"unable to read ([0-9a-f]{40})")


def _is_url(location: str) -> bool:
    return "://" in location or (":" in location and "@" in location.split(":", 1)[0])


class RepoCache:
    """Finds (or clones) the repository of `owner/name` that holds the commits asked for."""

    def __init__(self, cache_dir: Path, mirror: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.mirror = mirror

    def location(self, repo: str) -> str:
        owner, _, name = repo.partition("/")
        template = self.mirror or GITHUB
        try:
            return template.format(owner=owner, name=name, repo=repo)
        except (KeyError, IndexError) as exc:
            raise RepoError(
                f"--git-mirror {template!r} has an unknown placeholder {exc}",
                hint="use {owner} and {name}, e.g. /srv/git/{owner}+{name}/repo",
            ) from None

    async def local(self, repo: str, commits: Sequence[str]) -> Path:
        """A host git repository for `repo` that contains every commit in `commits`."""
        where = self.location(repo)
        if not _is_url(where):
            path = Path(where).expanduser()
            if not path.exists():
                raise RepoError(
                    f"no mirror of {repo} at {path}",
                    hint="check --git-mirror, or mirror it there with "
                    f"`git clone --mirror https://github.com/{repo} {path}`",
                )
            await self._check(repo, path, commits)
            return path
        return await self._cached_clone(repo, where, commits)

    async def checkout(self, repo: str, commit: str) -> Path:
        """A work tree of `repo` at `commit` (shallow: no history after it), cached."""
        source = await self.local(repo, [commit])
        full = await resolve_commit(source, commit)
        try:
            return await cached_checkout(source, full, self.cache_dir)
        except RepoError as exc:
            missing = _UNREADABLE.search(exc.message)
            if missing is None:
                raise
            # The commit is there but not every object of its tree: a partial mirror (one
            # that leaves out large files) cannot give this commit's work tree.
            blob = missing.group(1)
            listing = await git("ls-tree", "-r", full, cwd=source, check=False)
            paths = [ln.split("\t", 1)[1] for ln in listing.splitlines() if blob in ln]
            what = f"object {blob}" + (f" ({paths[0]})" if paths else "")
            raise RepoError(
                f"{repo}: the repository at {source} lacks {what} of commit "
                f"{full[:12]}'s tree (an incomplete mirror)",
                hint="complete the mirror (`git fetch` from the origin, or clone it again "
                "without size limits)",
            ) from None

    async def _check(self, repo: str, path: Path, commits: Sequence[str]) -> None:
        for commit in commits:
            try:
                await resolve_commit(path, commit)
            except RepoError as exc:
                raise RepoError(f"{repo}: {exc.message}", hint=exc.hint) from None

    async def _cached_clone(self, repo: str, url: str, commits: Sequence[str]) -> Path:
        owner, _, name = repo.partition("/")
        target = self.cache_dir / "repos" / f"{owner}+{name}.git"
        async with host_lock(target.parent, target.name):
            if not (target / "HEAD").exists():
                tmp = target.with_name(target.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    await git("clone", "--bare", "--quiet", url, str(tmp))
                except RepoError as exc:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise RepoError(
                        f"could not clone {repo} from {url}: {exc.message}",
                        hint="offline? pass --git-mirror TEMPLATE pointing at local mirrors",
                    ) from None
                tmp.rename(target)
            if await self._missing(target, commits):
                # A cached clone older than the data set: fetch what is new, once.
                await git("fetch", "--quiet", url, "+refs/heads/*:refs/heads/*", cwd=target)
            await self._check(repo, target, commits)
        return target

    async def _missing(self, path: Path, commits: Sequence[str]) -> bool:
        for commit in commits:
            try:
                await resolve_commit(path, commit)
            except RepoError:
                return True
        return False
