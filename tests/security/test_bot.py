"""The bot against hostile comments: who may start it, what a comment may choose, where the
GitHub token lives, and which sandboxes it runs. Through `python -m harness bot github`, as the
Actions runner starts it, against the loopback GitHub (tests/bot/ghserver.py) and a real bare
remote on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.bot.events import Trigger, parse_event
from harness.bot.render import marker
from tests.bot.conftest import (
    ISSUE,
    REPO,
    Project,
    comment_event,
    label_event,
    make_project,
    new_token,
    serve_github,
    write_event,
)
from tests.bot.ghserver import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-" + "4" * 24
SOLVER = ("--solver", "tests.bot.solvers:make_solver")


@pytest.fixture
def token() -> str:
    return new_token()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


@pytest.fixture
def github(token: str, project: Project) -> Iterator[FakeGitHub]:
    with serve_github(token, project) as gh:
        yield gh


def bot(
    tmp_path: Path,
    project: Project,
    github: FakeGitHub,
    token: str,
    payload: dict[str, Any],
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], int]:
    """One `harness bot github` run; its result and its pid."""
    event = write_event(tmp_path / "event.json", payload)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GH_"))}
    full_env = {
        **base,
        "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
        "GITHUB_TOKEN": token,
        "GITHUB_API_URL": github.api_url,
        "GITHUB_EVENT_NAME": "issue_comment" if "comment" in payload else "issues",
        "OPENAI_API_KEY": API_KEY,
        **(env or {}),
    }
    argv = [sys.executable, "-m", "harness", "bot", "github", "--event", str(event)]
    argv += ["--repo", str(project.work), "--run-dir", str(tmp_path / "runs"), *args]
    with subprocess.Popen(
        argv,
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), proc.pid


@pytest.mark.parametrize("permission", ["read", "triage"])
def test_member_without_write_permission_is_refused(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str, permission: str
) -> None:
    # An org member (author_association MEMBER) who cannot push to this repository.
    github.permissions[(REPO, "org-member")] = permission
    payload = comment_event(github, "/harness solve", user="org-member", association="MEMBER")
    proc, _ = bot(tmp_path, project, github, token, payload, *SOLVER)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"refused: @org-member has {permission} permission")
    assert github.calls("GET", r"/collaborators/org-member/permission$")
    assert not (tmp_path / "runs").exists()  # no solver was started
    assert "write access" in github.issue_comments(REPO, ISSUE)[-1]["body"]


def test_markers_of_users_without_write_permission_do_not_count(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    # A member without write access plants "already done" to keep the bot from acting.
    github.permissions[(REPO, "org-member")] = "read"
    payload = label_event(github)
    trigger = parse_event("issues", payload)
    assert isinstance(trigger, Trigger)
    forged = marker(trigger.key, "done")
    github.add_comment(REPO, ISSUE, forged, user="org-member", association="MEMBER")
    proc, _ = bot(tmp_path, project, github, token, payload, *SOLVER)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("opened: pull request #101")


@pytest.mark.parametrize("allowed", ["", "openai:gpt-4o-mini"])
@pytest.mark.parametrize(
    "model", ["script:{evil}", "hf:{models}", "hf:./models", "openai:gpt-5", "smollm2-135m"]
)
def test_a_comment_chooses_no_script_no_path_and_no_unlisted_model(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str, allowed: str, model: str
) -> None:
    # A script model that announces itself when the bot (or its solver) imports it.
    evil = tmp_path / "evil.py"
    evil.write_text(
        "from pathlib import Path\n"
        "Path(__file__).with_suffix('.ran').write_text('host code ran')\n"
        "def respond(request):\n    return ''\n"
    )
    (tmp_path / "models").mkdir()
    spec = model.format(evil=evil, models=tmp_path / "models")
    config = tmp_path / "solve.yaml"
    config.write_text("samples: 1\n")
    payload = comment_event(github, f"/harness solve --model {spec}")
    proc, _ = bot(
        tmp_path, project, github, token, payload, "--config", str(config),
        "--allowed-models", allowed,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("invalid:"), proc.stdout
    assert not evil.with_suffix(".ran").exists() and not (tmp_path / "runs").exists()
    reply = github.issue_comments(REPO, ISSUE)[-1]["body"]
    assert "not allowed here" in reply or "lets no comment choose the model" in reply


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        ("openai:gpt-4o,script:/srv/models/replay.py", "a script: model runs a file on the host"),
        ("hf:/srv/models/qwen", "never a local directory"),
        ("hf:./qwen", "never a local directory"),
        ("hf:org/../../etc", "is not a model spec"),
        ("/srv/models/qwen", "is not a model spec"),
        ("Qwen", "is not a store name"),
    ],
)
def test_the_allow_list_holds_no_script_and_no_path(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str, listed: str, message: str
) -> None:
    payload = label_event(github)
    proc, _ = bot(tmp_path, project, github, token, payload, *SOLVER, "--allowed-models", listed)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert github.requests == []


def test_the_solver_process_never_holds_the_github_token(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    runner_token = "rt-" + "5" * 30
    env = {
        "MY_PAT": f"x-access-token:{token}",  # the token again, under a name of the workflow's
        "ACTIONS_RUNTIME_TOKEN": runner_token,
    }
    proc, bot_pid = bot(tmp_path, project, github, token, label_event(github), *SOLVER, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("opened: pull request #101")  # the bot still did its job
    (spied_file,) = (tmp_path / "runs").glob("*/environ.json")
    spied = json.loads(spied_file.read_text())
    assert spied["pid"] != bot_pid  # another process ...
    for secret in (token, runner_token):  # ... whose environment, as the kernel keeps it, too
        assert secret not in spied["proc_environ"]
        assert secret not in json.dumps(spied["os_environ"])
    assert "GITHUB_TOKEN=" not in spied["proc_environ"]
    assert spied["os_environ"]["OPENAI_API_KEY"] == API_KEY  # what the solver needs stays


def test_the_solver_worker_refuses_to_run_with_a_token(tmp_path: Path) -> None:
    request = {
        "spec": {"solver": "tests.bot.solvers:make_solver", "config_file": None, "backend": None},
        "options": {"samples": None, "model": None, "budget_usd": None},
        "task": {"task_id": "t", "issue": "x", "repo": str(tmp_path), "base_commit": "0" * 40},
        "run_dir": str(tmp_path / "run"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bot", "solve-worker"],
        input=json.dumps(request),
        env={**os.environ, "GITHUB_TOKEN": "ghs_" + "6" * 36},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "holds GITHUB_TOKEN; refusing to run" in proc.stderr
    assert not (tmp_path / "run" / "seen.json").exists()


@pytest.mark.parametrize("how", ["option", "config"])
def test_local_backend_is_refused_in_bot_mode(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str, how: str
) -> None:
    config = tmp_path / "solve.yaml"
    config.write_text("sandbox:\n  backend: local\n")
    args = ["--backend", "local"] if how == "option" else ["--config", str(config)]
    proc, _ = bot(tmp_path, project, github, token, label_event(github), *args)
    assert proc.returncode == 2
    assert "local sandbox backend is refused in bot mode" in proc.stderr
    assert "--backend docker" in proc.stderr  # the hint
    assert github.requests == [] and not (tmp_path / "runs").exists()
