"""A model's edit through a symbolic link in the work tree (`up -> ..`) never writes outside
the work tree and never ends the sample: like a write the sandbox refuses, it becomes an
observation for the model, and the sample goes on to a real fix."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.sandboxes import Sandbox, SandboxBackend, make_backend
from tests.agent.stage import run_edit_stage
from tests.agent.test_edits import block
from tests.conftest import docker_ready, git, make_repo

CALC = "def add(a, b):\n    return a - b\n"
TEST = "import sys\nfrom calc import add\nsys.exit(0 if add(2, 3) == 5 else 2)\n"
FIX = "<edit>\n" + block("calc.py", "    return a - b", "    return a + b") + "</edit>"


@pytest.fixture(params=["docker", "bwrap", "local"])
async def backend(request: pytest.FixtureRequest, cache_dir: Path) -> AsyncIterator[SandboxBackend]:
    name: str = request.param
    if name == "docker":
        request.applymarker(pytest.mark.docker)
        reason = docker_ready()
        if reason:
            pytest.skip(f"docker unavailable: {reason}")
    if name == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    async with make_backend(name, cache_dir) as be:
        yield be


@pytest.fixture
def linked_repo(tmp_path: Path) -> tuple[Path, str]:
    """A real repository whose tree holds `up -> ..` and `host -> <an absolute host path>`
    (a directory of this test, so that a regression plants files nowhere else)."""
    repo = tmp_path / "repo"
    make_repo(repo, {"calc.py": CALC, "pkg/__init__.py": ""})
    (tmp_path / "outside").mkdir()
    os.symlink("..", repo / "up")
    os.symlink(str(tmp_path / "outside"), repo / "host")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    return repo, git(repo, "rev-parse", "HEAD")


async def outside(box: Sandbox, name: str) -> bool:
    """Whether `name` exists in the work tree's parent directory (the host's, for local)."""
    res = await box.exec(f'test -e "$(cd .. && pwd)/{name}"')
    return res.exit_code == 0


async def test_an_edit_through_a_link_out_of_the_tree_is_refused(
    backend: SandboxBackend, linked_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo, commit = linked_repo
    escape = "<edit>\n" + block("up/escape.py", "", "import os  # planted") + "</edit>"
    host = "<edit>\n" + block("host/planted.py", "", "x = 1") + "</edit>"
    git_dir = "<edit>\n" + block(".git/hooks/post-checkout", "", "#!/bin/sh\nid") + "</edit>"
    boxes: list[Sandbox] = []
    run = await run_edit_stage(
        backend,
        repo,
        commit,
        [escape, host, git_dir, FIX, "<done/>"],
        tmp_path,
        test=TEST,
        max_turns=6,
        after=boxes,
    )
    try:
        assert not await outside(boxes[0], "escape.py")
        planted = await boxes[0].exec(f"test -e {tmp_path}/outside/planted.py")
        assert planted.exit_code != 0
    finally:
        await boxes[0].close()
    assert not (repo.parent / "escape.py").exists()
    assert list((tmp_path / "outside").iterdir()) == []
    paths = ("up/escape.py", "host/planted.py", ".git/hooks/post-checkout")
    for told, path in zip(run.observations[:3], paths, strict=True):
        assert f"block 1 ({path}): the path leads outside the repository" in told, told
    # The sample went on: the real fix is its candidate, and nothing else is in it.
    assert run.outcome.reason == "done" and run.outcome.patched and run.outcome.patched.passes
    assert "calc.py" in run.outcome.patch
    assert (
        "escape" not in run.outcome.patch
        and "planted" not in run.outcome.patch
        and ".git" not in run.outcome.patch
    )


async def test_a_write_the_sandbox_refuses_is_an_observation_and_undoes_the_edit(
    backend: SandboxBackend, linked_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo, commit = linked_repo
    # Block 1 is fine; block 2 writes over a directory, which the sandbox refuses: neither
    # stays applied, and the model hears why.
    both = (
        "<edit>\n"
        + block("calc.py", "    return a - b", "    return a + b")
        + block("pkg", "", "x = 1")
        + "</edit>"
    )
    run = await run_edit_stage(backend, repo, commit, [both, FIX, "<done/>"], tmp_path, test=TEST)
    assert run.observations[0].startswith(
        "Your edit was not applied: the sandbox refused to write pkg"
    )
    assert "Running the script" not in run.observations[0]
    assert run.outcome.reason == "done" and run.outcome.patched and run.outcome.patched.passes
    assert run.outcome.patch.count("+    return a + b") == 1
