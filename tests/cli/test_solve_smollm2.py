"""The README's main job: `harness solve` on the bundled example with the embedded SmolLM2
model, in real docker sandboxes. However poor its edits, the run completes with a well-formed
report (a 135M model rarely fixes the bug; a scripted model does, in test_orchestrator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import docker_ready

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.docker
def test_solve_the_example_with_smollm2(tmp_path: Path) -> None:
    if reason := docker_ready():
        pytest.skip(reason)
    env = dict(os.environ)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "solve",
        "examples/durations.issue.md",
        "--repo",
        "examples/durations",
        "--config",
        "examples/smollm2-quick.yaml",
        "--out",
        str(run_dir),
        "--json",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode in (0, 3), res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["status"] in ("patched", "no_patch") and summary["tokens"] > 0
    assert len(json.loads((run_dir / "summary.json").read_text())["samples"]) == 2
    report = (run_dir / "report.md").read_text()
    for heading in ("# harness report: durations", "## What was tried", "## Votes", "## Cost"):
        assert heading in report
    for log in (run_dir / "trajectories").glob("*.jsonl"):
        kinds = {json.loads(line)["kind"] for line in log.read_text().splitlines()}
        assert {"llm", "checkpoint", "outcome"} <= kinds
