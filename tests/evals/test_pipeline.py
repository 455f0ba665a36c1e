"""The real harness pipeline on a SWE-bench-style data set: `harness solve ID --dataset` and
`harness eval run` with the pipeline as its default solver (scripted model, real docker
sandboxes, the env image built from the registered spec), graded resolved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import docker_ready
from tests.evals.conftest import Project

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "tests" / "evals" / "calc_oracle.py"

pytestmark = pytest.mark.docker


def harness(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_solve_an_instance_then_eval_run_resolves_it(tmp_path: Path, project: Project) -> None:
    if reason := docker_ready():
        pytest.skip(reason)
    common = [
        "--dataset",
        str(project.dataset),
        "--git-mirror",
        project.mirror,
        "--specs",
        str(project.specs_file),
    ]
    instance = project.records[0]["instance_id"]
    proc = harness(
        tmp_path,
        "solve",
        instance,
        *common,
        "--model",
        f"script:{ORACLE}",
        "-n",
        "2",
        "--json",
        "--out",
        str(tmp_path / "solve"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["task_id"] == instance and "+    return a + b" in summary["patch"]
    task = json.loads((tmp_path / "solve" / "task.json").read_text())
    assert task["image"] and "add(2, 3) returns -1" in task["issue"]

    out = tmp_path / "eval"
    proc = harness(
        tmp_path,
        "eval",
        "run",
        *common,
        "--model",
        f"script:{ORACLE}",
        "--samples",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    assert [p["instance_id"] for p in predictions] == [instance]
    assert "+    return a + b" in predictions[0]["model_patch"]
    run_meta = json.loads((out / "run.json").read_text())
    assert run_meta["solver"].startswith("harness pipeline (script:")
    assert "resolved 1/1 (100.0%) · coverage 1/1" in proc.stdout
    # The solve record keeps each sample's candidate and the measured tool-call timings.
    (solve,) = [json.loads(line) for line in (out / "solves.jsonl").read_text().splitlines()]
    assert len(solve["samples"]) == 2 and set(solve["samples"]) <= {
        c["candidate_id"] for c in solve["candidates"]
    }
    assert {"testing", "editing", "voting"} <= set(solve["exec_s"])
    assert all(0 < s < 120 for v in solve["exec_s"].values() for s in v)
    assert {"run_test", "edit_and_test"} <= set(solve["gap_s"])
    # A gap covers the exec that follows the turn: at least the script's own run time.
    assert max(solve["gap_s"]["run_test"]) >= min(solve["exec_s"]["testing"])
