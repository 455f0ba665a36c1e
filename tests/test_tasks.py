"""Loading tasks: issue files and stdin, git repos, plain directories, git URLs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import RepoError, TaskError
from harness.tasks import make_task, read_issue, resolve_repo
from tests.conftest import git, make_repo

ROOT = Path(__file__).resolve().parent.parent


def test_issue_from_file_and_stdin(tmp_path: Path) -> None:
    issue = tmp_path / "bug-123.md"
    issue.write_text("# Title\n\nbody\n")
    assert read_issue(str(issue)) == ("# Title\n\nbody\n", "bug-123")
    text, stem = read_issue("-", "piped issue")
    assert text == "piped issue" and stem.startswith("issue-")
    with pytest.raises(TaskError, match="does not exist"):
        read_issue(str(tmp_path / "nope.md"))
    with pytest.raises(TaskError, match="standard input"):
        read_issue("-", "  ")


async def test_git_repo_at_a_commit(tmp_path: Path, cache_dir: Path) -> None:
    first = make_repo(tmp_path / "r", {"a.py": "A = 1\n"})
    make_repo(tmp_path / "r", {"a.py": "A = 2\n"})
    path, sha, note = await resolve_repo(str(tmp_path / "r"), first[:8], cache_dir)
    assert path == (tmp_path / "r").resolve() and sha == first and note == ""
    (tmp_path / "r" / "a.py").write_text("A = 3\n")
    _, _, note = await resolve_repo(str(tmp_path / "r"), None, cache_dir)
    assert "uncommitted changes" in note


async def test_plain_directory_is_snapshotted_once(tmp_path: Path, cache_dir: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "pkg").mkdir(parents=True)
    (plain / "pkg" / "m.py").write_text("X = 1\n")
    (plain / "pkg" / "__pycache__").mkdir()
    (plain / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"junk")
    repo, sha, note = await resolve_repo(str(plain), None, cache_dir)
    assert "snapshotted" in note
    assert git(repo, "ls-files") == "pkg/m.py"
    again, sha2, _ = await resolve_repo(str(plain), None, cache_dir)
    assert (again, sha2) == (repo, sha)
    with pytest.raises(RepoError, match="needs a git repository"):
        await resolve_repo(str(plain), "HEAD", cache_dir)


async def test_subdirectory_of_a_repo_is_a_plain_directory(cache_dir: Path) -> None:
    # The bundled example lives inside this project's repository.
    repo, _, note = await resolve_repo(str(ROOT / "examples" / "durations"), None, cache_dir)
    assert "snapshotted" in note
    files = git(repo, "ls-files").splitlines()
    assert "durations/parse.py" in files and not any(f.startswith("harness/") for f in files)


async def test_git_url_is_cloned(tmp_path: Path, cache_dir: Path) -> None:
    sha = make_repo(tmp_path / "src", {"a.py": "A = 1\n"})
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(tmp_path / "src"), str(tmp_path / "remote.git")],
        check=True,
    )
    path, got, note = await resolve_repo(f"file://{tmp_path / 'remote.git'}", None, cache_dir)
    assert got == sha and "cloned" in note and path.is_relative_to(cache_dir)
    with pytest.raises(RepoError, match="cannot clone"):
        await resolve_repo(f"file://{tmp_path / 'missing.git'}", None, cache_dir)


async def test_make_task(tmp_path: Path, cache_dir: Path) -> None:
    task, _ = await make_task(
        str(ROOT / "examples/durations.issue.md"), str(ROOT / "examples/durations"), None, cache_dir
    )
    assert task.task_id == "durations" and "fractional" in task.title
    with pytest.raises(RepoError, match="does not exist"):
        await make_task(
            str(ROOT / "examples/durations.issue.md"), str(tmp_path / "x"), None, cache_dir
        )


async def test_unusable_input_errors_are_one_line_with_a_hint(
    tmp_path: Path, cache_dir: Path
) -> None:
    (tmp_path / "empty.md").write_text("\n  \n")
    (tmp_path / "file.txt").write_text("x")
    cases: list[tuple[object, str]] = [
        (lambda: read_issue(str(tmp_path / "empty.md")), "is empty"),
        (lambda: read_issue(str(tmp_path)), "is not a file"),
        (lambda: resolve_repo(str(tmp_path / "absent"), None, cache_dir), "does not exist"),
        (lambda: resolve_repo(str(tmp_path / "file.txt"), None, cache_dir), "is a file"),
        # A refused loopback connection: git's several lines become the one that says why.
        (lambda: resolve_repo("http://127.0.0.1:1/x.git", None, cache_dir), "cannot clone"),
    ]
    for call, message in cases:
        with pytest.raises((TaskError, RepoError), match=message) as info:
            result = call()  # type: ignore[operator]
            if hasattr(result, "__await__"):
                await result
        assert "\n" not in info.value.message and info.value.hint, info.value
