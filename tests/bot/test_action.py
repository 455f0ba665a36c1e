"""The composite action's script, run by bash the way the Actions runner would (inputs through
the environment), against the loopback GitHub; and the example workflow's consistency."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bot.conftest import ISSUE, REPO, Project, label_event, write_event
from tests.bot.ghserver import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
WORKFLOW = yaml.safe_load((ROOT / "examples" / "github-workflow.yml").read_text())


def bot_step() -> dict[str, Any]:
    (step,) = [s for s in ACTION["runs"]["steps"] if s["name"] == "harness bot github"]
    return step


def run_action(
    tmp_path: Path,
    project: Project,
    github: FakeGitHub,
    token: str,
    payload: dict[str, Any],
    **inputs: str,
) -> subprocess.CompletedProcess[str]:
    defaults = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    values = {**defaults, "github-token": token, **inputs}
    env: dict[str, str] = {}
    for key, expr in bot_step()["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([a-z-]+) \}\}", expr)
        assert match, expr
        env[key] = values[match[1]]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "harness"  # stands in for the installed console script
    shim.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" -m harness "$@"\n')
    shim.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GH_"))}
    env = {
        **base,
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "GITHUB_EVENT_PATH": str(write_event(tmp_path / "event.json", payload)),
        "GITHUB_EVENT_NAME": "issues",
        "GITHUB_WORKSPACE": str(project.work),
        "GITHUB_API_URL": github.api_url,
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
    }
    return subprocess.run(
        ["bash", "-c", bot_step()["run"]], env=env, capture_output=True, text=True, timeout=120
    )


def test_action_runs_the_bot_with_its_inputs(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    # A custom label reaches the bot (it acts on it), and an untrusted labeler is refused:
    # the whole path from inputs to a comment on the issue, without a solver.
    payload = label_event(github, sender="triager", label="fix-me")
    proc = run_action(
        tmp_path, project, github, token, payload, label="fix-me", **{"api-key": "sk-" + "7" * 30}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: @triager has triage permission")
    assert "nothing was started" in github.issue_comments(REPO, ISSUE)[-1]["body"]
    assert "sk-" + "7" * 30 not in proc.stdout + proc.stderr


def test_action_rejects_a_bad_key_variable_name(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    proc = run_action(
        tmp_path,
        project,
        github,
        token,
        label_event(github),
        **{"api-key": "sk-x", "api-key-env": "X; rm -rf /"},
    )
    assert proc.returncode == 2 and "api-key-env is not a variable name" in proc.stdout
    assert github.requests == []


def test_the_removed_trusted_input_fails_loudly(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    # `trusted: OWNER` once narrowed who may trigger; silently ignoring it would widen that.
    proc = run_action(tmp_path, project, github, token, label_event(github), trusted="OWNER")
    assert proc.returncode == 2 and "set min-permission" in proc.stdout
    assert github.requests == []


def test_no_input_is_spliced_into_the_script() -> None:
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step["name"]


def test_example_workflow_matches_the_action() -> None:
    assert set(WORKFLOW[True]) == {"issues", "issue_comment"}  # YAML 1.1 reads `on` as True
    assert WORKFLOW[True]["issues"]["types"] == ["labeled"]
    assert WORKFLOW[True]["issue_comment"]["types"] == ["created"]
    assert WORKFLOW["permissions"] == {
        "contents": "write",
        "issues": "write",
        "pull-requests": "write",
    }
    steps = WORKFLOW["jobs"]["harness"]["steps"]
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    bot = next(s for s in steps if s.get("name") == "harness bot")
    assert set(bot["with"]) <= set(ACTION["inputs"])
    assert "secrets.OPENAI_API_KEY" in bot["with"]["api-key"]
    assert any("pip install" in s.get("run", "") for s in steps)


@pytest.mark.parametrize(
    "name", ["model", "samples", "max-usd", "config", "api-key", "api-key-env"]
)
def test_action_has_the_documented_inputs(name: str) -> None:
    assert name in ACTION["inputs"] and ACTION["inputs"][name]["description"]


RENAMED = {
    "budget-usd": "max-usd",
    "max-samples": "comment-max-samples",
    "max-budget-usd": "comment-max-usd",
}


def test_renamed_inputs_are_still_read_with_a_warning(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    for old, new in RENAMED.items():
        assert new in ACTION["inputs"] and ACTION["inputs"][old]["deprecationMessage"]
    payload = label_event(github, sender="triager")
    values = {"budget-usd": "3", "max-samples": "4", "max-budget-usd": "9"}
    proc = run_action(tmp_path, project, github, token, payload, **values)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: @triager has triage permission")
    for old, new in RENAMED.items():
        assert f"::warning::the {old} input is renamed {new}" in proc.stderr
    assert "is deprecated" not in proc.stderr  # the action passes the CLI its new names


def test_the_config_input_reaches_the_bot(
    tmp_path: Path, project: Project, github: FakeGitHub, token: str
) -> None:
    config = tmp_path / "harness.yaml"
    config.write_text("bot:\n  label: fix-me\n")
    payload = label_event(github, sender="triager", label="fix-me")
    proc = run_action(tmp_path, project, github, token, payload, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: @triager")  # acted on: fix-me is the label
