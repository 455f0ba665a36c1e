"""`python -m harness bot github --event FILE` in a subprocess, against the loopback GitHub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bot.conftest import ISSUE, REPO, Project, comment_event, label_event, write_event
from tests.bot.ghserver import FakeGitHub
from tests.conftest import git

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-" + "9" * 24


def run_cli(
    tmp_path: Path, project: Project, env: dict[str, str], payload: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    event = write_event(tmp_path / "event.json", payload)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GH_"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "bot",
            "github",
            "--event",
            str(event),
            "--repo",
            str(project.work),
            "--out",
            str(tmp_path / "runs"),
            *args,
        ],
        cwd=ROOT,
        env={**base, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(github: FakeGitHub, token: str) -> dict[str, str]:
    return {
        "GITHUB_TOKEN": token,
        "GITHUB_API_URL": github.api_url,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_RUN_ID": "99",
        "GITHUB_EVENT_NAME": "issues",
        "OPENAI_API_KEY": API_KEY,
    }


def test_label_event_opens_a_pull_request(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str], token: str
) -> None:
    proc = run_cli(
        tmp_path,
        project,
        env,
        label_event(github),
        "--solver",
        "tests.bot.solvers:make_leaky_solver",
        "--samples",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"opened: pull request #101 https://github.com/{REPO}/pull/101"
    assert (
        git(project.bare, "show", "harness/issue-7:calc.py") == "def add(a, b):\n    return a + b"
    )
    (seen_file,) = (tmp_path / "runs").glob("*/seen.json")
    seen = json.loads(seen_file.read_text())
    assert seen["github_token_in_env"] is False  # the solver's process has no GitHub token
    # The solver's config: the workflow's flags on the defaults.
    assert seen["options"] == {"samples": 2, "model": "smollm2-135m", "budget_usd": None}
    body = github.pulls[0]["body"]
    assert "debug: OPENAI_API_KEY=***" in body
    assert "https://github.com/octo/calc/actions/runs/99" in body
    everything = proc.stdout + proc.stderr + json.dumps([r.body for r in github.requests])
    assert token not in everything and API_KEY not in everything


def test_untrusted_comment_is_refused(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str]
) -> None:
    payload = comment_event(github, "/harness solve", user="drive-by", association="NONE")
    proc = run_cli(
        tmp_path,
        project,
        {**env, "GITHUB_EVENT_NAME": "issue_comment"},
        payload,
        "--solver",
        "tests.bot.solvers:make_solver",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: @drive-by has read permission")
    assert not (tmp_path / "runs").exists()
    assert "nothing was started" in github.issue_comments(REPO, ISSUE)[-1]["body"]


@pytest.mark.parametrize("model", [None, "openai:gpt-4o"])
def test_the_log_says_when_the_embedded_model_runs_the_bot(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str], model: str | None
) -> None:
    payload = comment_event(github, "/harness solve", user="drive-by", association="NONE")
    args = ("--model", model) if model else ()
    proc = run_cli(tmp_path, project, {**env, "GITHUB_EVENT_NAME": "issue_comment"}, payload, *args)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    assert ("embedded smollm2-135m" in said and "-m hf:" in said) == (model is None), said


def test_missing_token_is_a_usage_error(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str]
) -> None:
    proc = run_cli(tmp_path, project, {**env, "GITHUB_TOKEN": ""}, label_event(github))
    assert proc.returncode == 2 and "GITHUB_TOKEN is not set" in proc.stderr
    assert github.requests == []


def test_rejected_token_fails_clearly_without_showing_it(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str], token: str
) -> None:
    wrong = "ghs_" + "x" * 36
    proc = run_cli(
        tmp_path,
        project,
        {**env, "GITHUB_TOKEN": wrong},
        label_event(github),
        "--solver",
        "tests.bot.solvers:make_solver",
    )
    assert proc.returncode == 1
    assert "rejected the token (401: Bad credentials)" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr


def test_bad_solver_spec(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str]
) -> None:
    proc = run_cli(tmp_path, project, env, label_event(github), "--solver", "no.such:thing")
    assert proc.returncode == 2 and "--solver 'no.such:thing': cannot import it" in proc.stderr


@pytest.mark.docker
def test_the_real_pipeline_opens_a_pull_request_with_the_fix_and_test(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str], token: str
) -> None:
    from tests.conftest import docker_ready

    if reason := docker_ready():
        pytest.skip(reason)
    config = tmp_path / "solve.yaml"
    oracle = ROOT / "tests" / "bot" / "calc_oracle.py"
    config.write_text(f"model: script:{oracle}\nsamples: 2\n")
    proc = run_cli(tmp_path, project, env, label_event(github), "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("opened: pull request #101")
    assert "return a + b" in git(project.bare, "show", "harness/issue-7:calc.py")
    pushed_test = git(project.bare, "show", "harness/issue-7:tests/harness/test_issue_7.py")
    assert "add(2, 3) == 5" in pushed_test  # verified: fails on the base, passes on the fix
    body = github.pulls[0]["body"]
    assert "| `sample-00` | sample-00 | 2 | ✅ |" in body  # the vote table
    assert "fails without the patch and passes with it" in body
    everything = proc.stdout + proc.stderr + json.dumps([r.body for r in github.requests])
    assert token not in everything and API_KEY not in everything


def test_a_config_file_and_the_old_option_names_configure_the_bot(
    tmp_path: Path, project: Project, github: FakeGitHub, env: dict[str, str]
) -> None:
    """The `bot:` section sets the trigger label and caps; old names still work, warned."""
    config = tmp_path / "harness.yaml"
    config.write_text("samples: 2\nbot:\n  label: fix-me\n  comment_max_samples: 4\n")
    payload = comment_event(github, "/harness solve --samples 5")
    proc = run_cli(
        tmp_path,
        project,
        {**env, "GITHUB_EVENT_NAME": "issue_comment"},
        payload,
        "--config",
        str(config),
        "--solver",
        "tests.bot.solvers:make_solver",
        "--budget-usd",
        "3",
        "--max-budget-usd",
        "10",
    )
    assert proc.returncode == 0, proc.stderr
    # 5 samples is over the file's cap of 4: the comment is answered, nothing runs.
    assert proc.stdout.startswith("invalid: --samples must be a whole number from 1 to 4")
    assert "--budget-usd is deprecated and goes in the next release; use --max-usd" in proc.stderr
    assert "use --comment-max-usd" in proc.stderr
    label = run_cli(tmp_path, project, env, label_event(github), "--config", str(config))
    assert label.stdout.startswith("ignored:"), label.stdout  # the label is fix-me now


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "local"], "the local sandbox backend is refused in bot mode"),
        (["-c", "sandbox.backend=local"], "the local sandbox backend is refused in bot mode"),
        (["--max-usd", "1", "--budget-usd", "2"], "--budget-usd and --max-usd are the same"),
        (["--allowed-models", "script:x.py"], "allowed model 'script:x.py'"),
        (["--min-permission", "read"], "must be one of write, maintain, admin"),
        (["--solver", "nocolon"], "--solver 'nocolon' is not module:callable"),
    ],
)
def test_bad_settings_exit_2_before_any_api_call(
    tmp_path: Path,
    project: Project,
    github: FakeGitHub,
    env: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    proc = run_cli(tmp_path, project, env, label_event(github), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert github.requests == []


@pytest.mark.parametrize("solver", ["make_closing_solver", "make_failing_closing_solver"])
def test_the_solve_worker_closes_the_solver_it_builds(tmp_path: Path, solver: str) -> None:
    request = {
        "spec": {"solver": f"tests.bot.solvers:{solver}", "config_file": None, "backend": None},
        "options": {"samples": None, "model": None, "budget_usd": None},
        "task": {"task_id": "t", "issue": "x", "repo": str(tmp_path), "base_commit": "0" * 40},
        "run_dir": str(tmp_path / "run"),
    }
    from harness.bot.isolation import CREDENTIAL_VARS, RESULT_FILE

    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bot", "solve-worker"],
        input=json.dumps(request),
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    failing = solver.startswith("make_failing")
    assert proc.returncode == (1 if failing else 0), proc.stderr
    answer = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert ("error" in answer) == failing
    assert (tmp_path / "run" / "closed").read_text() == "1"  # closed once, also on failure
