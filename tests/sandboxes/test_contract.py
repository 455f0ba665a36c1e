"""One contract, every backend: exec, files, patches, diffs, forks, timeouts, output caps."""

from __future__ import annotations

import resource
import time
import uuid
from pathlib import Path

import pytest

from harness.errors import RepoError, SandboxError
from harness.sandboxes import SandboxBackend, SandboxSpec

FIX = "\n".join(
    [
        "diff --git a/calc.py b/calc.py",
        "--- a/calc.py",
        "+++ b/calc.py",
        "@@ -1,4 +1,4 @@",
        " def add(a, b):",
        "-    return a - b",
        "+    return a + b",
        " ",
        " ",
        "",
    ]
)

# Same change, but its context is off by a line and a word: git apply refuses, patch fuzzes.
FUZZY = "\n".join(
    [
        "--- a/calc.py",
        "+++ b/calc.py",
        "@@ -3,6 +3,6 @@",
        " ",
        " ",
        "-def mul(a, b):",
        "+def multiply(a, b):",
        "     return a * b",
        " # trailing context that is not in the file",
        "",
    ]
)


async def test_exec_reports_everything(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        res = await box.exec("echo out; echo err >&2; exit 3")
        assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
        assert res.duration_s > 0 and not res.timed_out and not res.truncated
        res = await box.exec(["python3", "-c", "import os; print(os.getcwd())"])
        assert res.stdout.strip() == box.workdir
        res = await box.exec("cat", stdin=b"piped")
        assert res.stdout == "piped"
        res = await box.exec(["definitely-not-a-command"])
        assert res.exit_code == 127


async def test_work_tree_is_clean_at_base_commit(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        assert "return a - b" in await box.read_file("calc.py")
        status = await box.exec("git status --porcelain")
        assert status.ok and status.stdout == ""
        assert await box.diff() == ""


async def test_files_and_diff(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        await box.write_file("calc.py", "def add(a, b):\n    return a + b\n")
        await box.write_file("new/module.py", "X = 1\n")
        await box.exec("mkdir -p __pycache__ && echo junk > __pycache__/calc.cpython-311.pyc")
        diff = await box.diff()
        assert "+    return a + b" in diff and "new/module.py" in diff
        assert "pycache" not in diff
        with pytest.raises(SandboxError):
            await box.read_file("missing.txt")


async def test_apply_patch_git_then_fuzz(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        res = await box.apply_patch(FIX)
        assert res.applied and res.method == "git-apply"
        assert "a + b" in await box.read_file("calc.py")
        res = await box.apply_patch(FUZZY)
        assert res.applied and res.method == "patch-fuzz", res.reason
        assert "def multiply" in await box.read_file("calc.py")


async def test_bad_patch_leaves_sandbox_unchanged(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        bad = FIX.replace("return a - b", "return something_else")
        res = await box.apply_patch(bad)
        assert not res.applied and "git apply" in res.reason and "patch" in res.reason
        assert await box.diff() == ""
        empty = await box.apply_patch("   \n")
        assert not empty.applied and "empty" in empty.reason


async def test_fork_is_an_independent_copy(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as parent:
        await parent.apply_patch(FIX)
        async with await parent.fork() as child:
            assert "a + b" in await child.read_file("calc.py")
            await child.write_file("only_child.txt", "x")
            assert "only_child.txt" in await child.diff()
            assert "only_child.txt" not in await parent.diff()
            assert "return a + b" in await child.diff()


async def test_timeout_kills_the_whole_tree(backend: SandboxBackend, repo: Path) -> None:
    tag = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 1000}"
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        start = time.monotonic()
        res = await box.exec(
            f"(sleep {tag} &) ; setsid sleep {tag} & sleep {tag}; echo never", timeout=1.0
        )
        assert res.timed_out and "never" not in res.stdout
        assert time.monotonic() - start < 1.0 + 2.0
        left = await box.exec(f"pgrep -f '[s]leep {tag}' || true", timeout=10)
        assert left.stdout.strip() == ""


async def test_flood_is_capped_and_memory_flat(backend: SandboxBackend, repo: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with await backend.open(SandboxSpec(repo=repo, output_cap=64 * 1024)) as box:
        res = await box.exec(
            "head -c 1000000000 /dev/zero | tr '\\0' 'a'; echo; echo END", timeout=120
        )
        assert res.ok and res.truncated
        assert res.stdout.startswith("aaaa") and res.stdout.endswith("END\n")
        assert "truncated" in res.stdout and len(res.stdout) < 70 * 1024
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200 * 1024  # far below the 1 GB that went through


async def test_missing_repo_or_commit_creates_nothing(
    backend: SandboxBackend, tmp_path: Path, repo: Path
) -> None:
    with pytest.raises(RepoError, match="does not exist"):
        await backend.open(SandboxSpec(repo=tmp_path / "nope"))
    with pytest.raises(RepoError, match="unknown commit"):
        await backend.open(SandboxSpec(repo=repo, commit="0123456789abcdef"))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RepoError, match="not a git repository"):
        await backend.open(SandboxSpec(repo=plain))
    assert not (tmp_path / "cache" / "checkouts").exists() or not any(
        (tmp_path / "cache" / "checkouts").iterdir()
    )


async def test_closed_sandbox_refuses(backend: SandboxBackend, repo: Path) -> None:
    box = await backend.open(SandboxSpec(repo=repo))
    await box.close()
    await box.close()  # idempotent
    with pytest.raises(SandboxError, match="closed"):
        await box.exec("true")


async def test_network_is_off_by_default(
    backend_name: str, backend: SandboxBackend, repo: Path
) -> None:
    if backend_name == "local":
        pytest.skip("the local backend has no isolation by design")
    probe = (
        'python3 -c "import socket; s=socket.socket(); s.settimeout(3); '
        "s.connect(('1.1.1.1', 80))\""
    )
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        res = await box.exec(probe, timeout=30)
        assert res.exit_code != 0 and "unreachable" in res.stderr.lower()


async def test_host_secrets_do_not_reach_commands(
    backend: SandboxBackend, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_host_secret")
    async with await backend.open(SandboxSpec(repo=repo, env={"VISIBLE": "yes"})) as box:
        res = await box.exec("env")
        assert "VISIBLE=yes" in res.stdout
        assert "host-secret" not in res.stdout and "host_secret" not in res.stdout
