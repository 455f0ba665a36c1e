"""Turning CLI input into a Task: the issue text, and a repository at a base commit.

`--repo` may be a git repository, a plain directory (snapshotted into a fresh repository as
the base commit), or a git URL (cloned into the cache). A subdirectory of some other git
repository counts as a plain directory: the task is that directory, not its parent project.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from pathlib import Path

from harness.errors import RepoError, TaskError
from harness.sandboxes.checkout import SAFE_GIT, git, resolve_commit
from harness.tempdirs import drop_tempdir, hold_tempdir
from harness.types import Task

_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:|\.git/?$")
SNAPSHOT_IGNORE = (
    "__pycache__/",
    "*.pyc",
    ".venv/",
    "venv/",
    "node_modules/",
    ".tox/",
    ".mypy_cache/",
    ".pytest_cache/",
    "*.egg-info/",
)
_AUTHOR = ["-c", "user.name=harness", "-c", "user.email=harness@localhost"]


def read_issue(source: str, stdin_text: str | None = None) -> tuple[str, str]:
    """(issue text, a task id derived from its source) from a file path or '-'."""
    if source == "-":
        if not stdin_text or not stdin_text.strip():
            raise TaskError(
                "no issue text on standard input",
                hint="pipe the issue in, e.g. `cat ISSUE.md | harness solve -`",
            )
        text = stdin_text
        stem = "issue-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    else:
        path = Path(source)
        hint = "pass a file with the issue text, or - to read standard input"
        if not path.exists():
            raise TaskError(f"issue file {source} does not exist", hint=hint)
        if not path.is_file():
            raise TaskError(f"issue file {source} is not a file", hint=hint)
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise TaskError(f"cannot read issue file {source}: {exc.strerror}", hint=hint) from exc
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name.split(".")[0]) or "issue"
    if not text.strip():
        raise TaskError(
            f"the issue text from {source} is empty",
            hint="write the issue (what is wrong, how to see it) into it first",
        )
    return text, stem


def issue_title(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip()[:120]
    return ""


async def _toplevel(path: Path) -> Path | None:
    proc = await asyncio.create_subprocess_exec(
        *SAFE_GIT,
        "rev-parse",
        "--show-toplevel",
        cwd=path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return Path(out.decode().strip()).resolve() if proc.returncode == 0 else None


async def snapshot_directory(directory: Path, cache_dir: Path) -> tuple[Path, str]:
    """Commit a plain directory's files into a cached repository; (repo, sha)."""
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not any(
            part in ("__pycache__", ".git", ".venv", "node_modules")
            for part in p.relative_to(directory).parts
        )
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    target = cache_dir / "snapshots" / digest.hexdigest()[:20]
    if not (target / ".git").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = hold_tempdir(".tmp-", target.parent)
        try:
            await asyncio.to_thread(
                shutil.copytree,
                directory,
                tmp / "repo",
                symlinks=True,
                ignore=shutil.ignore_patterns(
                    ".git", "__pycache__", "*.pyc", ".venv", "node_modules"
                ),
            )
            work = tmp / "repo"
            await git("init", "-q", str(work))
            (work / ".git" / "info" / "exclude").write_text("\n".join(SNAPSHOT_IGNORE) + "\n")
            await git("add", "-A", cwd=work)
            await git(
                *_AUTHOR,
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                f"snapshot of {directory}",
                cwd=work,
            )
            os.rename(work, target)
        finally:
            drop_tempdir(tmp)
    return target, await resolve_commit(target, "HEAD")


async def clone(url: str, cache_dir: Path) -> Path:
    """A cached clone of `url` (fetched again when it exists, to see new commits)."""
    target = cache_dir / "clones" / hashlib.sha256(url.encode()).hexdigest()[:20]
    if (target / ".git").exists():
        await git("fetch", "-q", "--tags", "origin", cwd=target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = hold_tempdir(".tmp-", target.parent)
    try:
        try:
            await git("clone", "-q", "--no-checkout", url, str(tmp / "repo"))
        except RepoError as exc:
            raise RepoError(
                f"cannot clone {url}: {_last_line(exc.message)}",
                hint="check the URL and your network, or pass a local --repo",
            ) from exc
        os.rename(tmp / "repo", target)
    finally:
        drop_tempdir(tmp)
    return target


async def resolve_repo(repo: str, commit: str | None, cache_dir: Path) -> tuple[Path, str, str]:
    """(repository path, base commit sha, a note for the user) for `--repo`/`--commit`."""
    if _URL.search(repo) and not Path(repo).exists():
        path = await clone(repo, cache_dir)
        sha = await resolve_commit(path, commit or "origin/HEAD")
        return path, sha, f"cloned {repo}"
    path = Path(repo).expanduser().resolve()
    hint = "pass a git repository, a plain directory or a git URL as --repo"
    if not path.exists():
        raise RepoError(f"repository path {repo} does not exist", hint=hint)
    if not path.is_dir():
        raise RepoError(f"--repo {repo} is a file, not a directory", hint=hint)
    top = await _toplevel(path)
    if top == path:
        sha = await resolve_commit(path, commit or "HEAD")
        dirty = await git("status", "--porcelain", "--untracked-files=no", cwd=path)
        note = (
            "uncommitted changes are not part of the task" if dirty.strip() and not commit else ""
        )
        return path, sha, note
    if commit:
        raise RepoError(
            f"--commit needs a git repository, and {repo} is not one",
            hint="drop --commit to snapshot the directory as it is",
        )
    snap, sha = await snapshot_directory(path, cache_dir)
    return snap, sha, f"snapshotted {repo} (not a git repository root) as {sha[:12]}"


def _last_line(text: str) -> str:
    """git's last `fatal:` line (the reason), else its last line: one line for a message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if "fatal:" in line]
    return (fatal or lines or [""])[-1]


async def make_task(
    issue_source: str,
    repo: str,
    commit: str | None,
    cache_dir: Path,
    *,
    stdin_text: str | None = None,
    task_id: str | None = None,
    image: str | None = None,
    workdir: str = "/testbed",
) -> tuple[Task, str]:
    text, stem = read_issue(issue_source, stdin_text)
    path, sha, note = await resolve_repo(repo, commit, cache_dir)
    task = Task(
        task_id or stem, text, str(path), sha, image=image, workdir=workdir, title=issue_title(text)
    )
    return task, note
