"""Host-side git: resolve a revision and keep a cached shallow checkout per (repo, commit).

Sandboxes are seeded from these checkouts, so opening many sandboxes of one task pays the
git work once. Every git call here passes config that disables hooks and fsmonitor, since
the repositories are third-party.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import stat
from pathlib import Path

from harness.errors import RepoError
from harness.tempdirs import drop_tempdir, hold_tempdir, release_tempdir

SAFE_GIT = [
    "git",
    "-c",
    "safe.directory=*",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "protocol.file.allow=always",
]


async def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run host git; raise RepoError with git's own message on failure."""
    proc = await asyncio.create_subprocess_exec(
        *SAFE_GIT,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RepoError(f"git {' '.join(args[:2])} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def resolve_commit(repo: Path, rev: str) -> str:
    """The full sha of `rev` in `repo`; a clear RepoError for a missing repo or revision."""
    if not repo.exists():
        raise RepoError(f"repository path {repo} does not exist")
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise RepoError(
            f"{repo} is not a git repository",
            hint="pass the root of a git work tree (or run `git init && git add -A && "
            "git commit` there first)",
        )
    proc = await asyncio.create_subprocess_exec(
        *SAFE_GIT,
        "rev-parse",
        "--verify",
        "--quiet",
        f"{rev}^{{commit}}",
        cwd=repo,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RepoError(
            f"unknown commit {rev!r} in {repo}",
            hint="check `git log` there; a branch, tag or (short) sha is accepted",
        )
    return out.decode().strip()


def readable_by_all(tree: Path) -> None:
    """a+rX on a checkout: sandboxes read it as an unprivileged uid of their own (bwrap).

    The cache directory above it keeps other host users out.
    """
    for top, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            path = os.path.join(top, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            extra = 0o555 if stat.S_ISDIR(mode) or mode & 0o111 else 0o444
            if mode & extra != extra:
                os.chmod(path, stat.S_IMODE(mode) | extra)
    os.chmod(tree, 0o755)


async def cached_checkout(repo: Path, commit: str, cache_dir: Path) -> Path:
    """A shallow clone of `repo` at `commit` (a full sha), created once and then reused."""
    repo = repo.resolve()
    key = hashlib.sha256(str(repo).encode()).hexdigest()[:16]
    target = cache_dir / "checkouts" / f"{key}-{commit}"
    if (target / ".git").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        if (target / ".git").exists():  # another process finished it meanwhile
            return target
        tmp = hold_tempdir(".tmp-", target.parent)
        try:
            await git("init", "-q", str(tmp))
            upload = "git -c uploadpack.allowAnySHA1InWant=true upload-pack"
            await git(
                "fetch",
                "-q",
                "--depth=1",
                f"--upload-pack={upload}",
                f"file://{repo}",
                commit,
                cwd=tmp,
            )
            await git("-c", "advice.detachedHead=false", "checkout", "-q", commit, cwd=tmp)
            await asyncio.to_thread(readable_by_all, tmp)
            os.rename(tmp, target)
            release_tempdir(tmp)
        except BaseException:
            drop_tempdir(tmp)
            raise
    with contextlib.suppress(OSError):
        os.unlink(f"{target}.lock")
    return target
