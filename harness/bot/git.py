"""Host git for the bot: commit a patch onto a branch without touching any work tree, push it,
and keep cached clones of GitHub repositories. Credentials travel only in the environment of
the one git process that needs them, scoped to the server's URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from harness.bot.redact import Redactor
from harness.errors import RepoError
from harness.sandboxes.checkout import SAFE_GIT
from harness.tempdirs import drop_tempdir, held_tempdir, hold_tempdir, release_tempdir


@dataclass(frozen=True)
class Author:
    name: str = "github-actions[bot]"
    email: str = "41898282+github-actions[bot]@users.noreply.github.com"


async def run_git(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    redact: Redactor | None = None,
) -> str:
    """Run host git (hooks and fsmonitor off); a RepoError with git's redacted message."""
    proc = await asyncio.create_subprocess_exec(
        *SAFE_GIT,
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})},
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        if redact is not None:
            message = redact(message)
        raise RepoError(f"git {args[0]} failed: {message}")
    return out.decode(errors="replace")


def auth_env(token: str | None, server_url: str) -> dict[str, str]:
    """Environment that makes git send `token` to `server_url` (and nowhere else)."""
    if not token or not server_url.startswith(("https://", "http://")):
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    key = f"http.{server_url.rstrip('/')}/.extraheader"
    # The empty value first resets any header actions/checkout persisted in .git/config,
    # so exactly one Authorization header goes out.
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": key,
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": key,
        "GIT_CONFIG_VALUE_1": f"AUTHORIZATION: basic {basic}",
    }


async def head_sha(repo: Path) -> str:
    if not (repo / ".git").exists():
        raise RepoError(
            f"{repo} is not a git checkout", hint="run the bot in the checked-out repository"
        )
    return (await run_git("rev-parse", "HEAD", cwd=repo)).strip()


def check_repo_path(path: str) -> str:
    """A relative path inside the repository, in posix form; RepoError otherwise."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or pure.parts[:1] == (".git",):
        raise RepoError(f"not a safe path inside the repository: {path!r}")
    return str(pure)


async def commit_patch(
    repo: Path,
    base: str,
    patch: str,
    *,
    files: Mapping[str, str],
    message: str,
    author: Author,
    protected: tuple[str, ...] = (),
) -> tuple[str, list[str]]:
    """Commit `patch` plus `files` on top of `base`, using a private index (no work tree).

    Returns the new commit's sha and the paths it changes. Refuses a patch that does not
    apply, changes nothing, or touches a `protected` path prefix.
    """
    with held_tempdir("harness-bot-index-") as tmp:
        env = {
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
        await run_git("read-tree", base, cwd=repo, env=env)
        if patch.strip():
            text = patch if patch.endswith("\n") else patch + "\n"
            try:
                await run_git(
                    "apply", "--cached", "--whitespace=nowarn", cwd=repo, env=env, stdin=text
                )
            except RepoError as exc:
                raise RepoError(
                    f"the winning patch does not apply to {base[:12]}: {exc.message}"
                ) from exc
        for path, content in files.items():
            blob = (await run_git("hash-object", "-w", "--stdin", cwd=repo, stdin=content)).strip()
            await run_git(
                "update-index",
                "--add",
                "--cacheinfo",
                f"100644,{blob},{check_repo_path(path)}",
                cwd=repo,
                env=env,
            )
        tree = (await run_git("write-tree", cwd=repo, env=env)).strip()
        changed = (await run_git("diff", "--name-only", base, tree, cwd=repo)).split()
        if not changed:
            raise RepoError("the patch changes nothing")
        blocked = [p for p in changed if any(p.startswith(pre) for pre in protected)]
        if blocked:
            raise RepoError(
                f"the patch changes protected paths: {', '.join(blocked)}",
                hint="the bot never pushes changes there; apply such a fix by hand",
            )
        sha = (
            await run_git("commit-tree", tree, "-p", base, cwd=repo, env=env, stdin=message)
        ).strip()
    return sha, changed


async def push_branch(
    repo: Path,
    sha: str,
    branch: str,
    *,
    remote: str = "origin",
    env: Mapping[str, str] | None = None,
    redact: Redactor | None = None,
) -> None:
    """Point `branch` on `remote` at `sha` (forced: the bot owns its branch namespace)."""
    await run_git("check-ref-format", f"refs/heads/{branch}")
    await run_git(
        "push",
        "--quiet",
        "--force",
        remote,
        f"{sha}:refs/heads/{branch}",
        cwd=repo,
        env=env,
        redact=redact,
    )


def clone_url(full_name: str, server_url: str = "https://github.com") -> str:
    """`<server>/<owner>/<repo>.git`; the server may also be a local directory (tests)."""
    return f"{server_url.rstrip('/')}/{full_name}.git"


async def clone_cached(
    url: str,
    cache_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    redact: Redactor | None = None,
) -> Path:
    """A clone of `url` under `cache_dir/github/`, created once, then fetched and reset to the
    remote's default branch on every call. Returns the work tree (HEAD = default branch)."""
    parts = urlsplit(url)
    host = parts.netloc or "local-" + hashlib.sha256(url.encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", parts.path.strip("/").removesuffix(".git"))
    target = cache_dir / "github" / re.sub(r"[^A-Za-z0-9._-]+", "_", host) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        if not (target / ".git").exists():
            tmp = hold_tempdir(".tmp-", target.parent)
            try:
                await run_git(
                    "clone",
                    "--quiet",
                    "--no-recurse-submodules",
                    url,
                    str(tmp),
                    env=env,
                    redact=redact,
                )
                os.rename(tmp, target)
                release_tempdir(tmp)
            except BaseException:
                drop_tempdir(tmp)
                raise
        else:
            await run_git(
                "fetch", "--quiet", "--prune", "origin", cwd=target, env=env, redact=redact
            )
            await run_git(
                "remote", "set-head", "origin", "--auto", cwd=target, env=env, redact=redact
            )
            await run_git("checkout", "--quiet", "--force", "--detach", "origin/HEAD", cwd=target)
            await run_git("clean", "-qfdx", cwd=target)
    with contextlib.suppress(OSError):
        os.unlink(f"{target}.lock")
    return target
