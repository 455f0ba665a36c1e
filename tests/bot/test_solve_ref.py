"""`harness solve owner/repo#123`: the issue's text from the GitHub API (a loopback server),
the repository from --repo or a clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bot.conftest import ISSUE, REPO, Project
from tests.bot.ghserver import FakeGitHub
from tests.conftest import docker_ready, git

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "tests" / "bot" / "calc_oracle.py"


def solve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GH_"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "solve",
            *args,
            "--model",
            f"script:{ORACLE}",
            "-n",
            "1",
            "--json",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        env={**base, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.docker
@pytest.mark.parametrize("with_repo", [True, False])
def test_solve_a_github_issue(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str, with_repo: bool
) -> None:
    if reason := docker_ready():
        pytest.skip(reason)
    # The clone URL is <server>/<owner>/<repo>.git; a file:// "server" holds the bare remote.
    server = tmp_path / "server"
    (server / "octo").mkdir(parents=True)
    git(tmp_path, "clone", "-q", "--bare", str(project.bare), str(server / "octo" / "calc.git"))
    env = {
        "GITHUB_API_URL": github.api_url,
        "GITHUB_TOKEN": token,
        "GITHUB_SERVER_URL": f"file://{server}",
    }
    repo_args = ["--repo", str(project.work)] if with_repo else []
    proc = solve(tmp_path, env, f"{REPO}#{ISSUE}", *repo_args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["task_id"] == "octo__calc-7" and "return a + b" in summary["patch"]
    task = json.loads((tmp_path / "run" / "task.json").read_text())
    assert "add() subtracts" in task["issue"] and "Same here on 1.2." in task["issue"]
    assert token not in proc.stdout + proc.stderr


def test_unknown_issue_is_a_clear_error(tmp_path: Path, github: FakeGitHub, token: str) -> None:
    env = {"GITHUB_API_URL": github.api_url, "GITHUB_TOKEN": token}
    proc = solve(tmp_path, env, f"{REPO}#999", "--repo", str(tmp_path))
    assert proc.returncode == 1 and "404" in proc.stderr and "Traceback" not in proc.stderr
