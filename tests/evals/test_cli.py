"""`harness eval` as a subprocess: killed mid-batch (real signals), then resumed; report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.evals.batch import GRADES, SOLVES
from harness.evals.records import read_grades
from harness.store import read_jsonl
from tests.evals.conftest import Project, make_project
from tests.evals.solvers import CALLS_LOG, DELAY_ENV
from tests.sandboxes.conftest import skip_unless_available

ROOT = Path(__file__).resolve().parents[2]


def harness(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "harness", "eval", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def common(project: Project) -> list[str]:
    return [
        "--git-mirror",
        project.mirror,
        "--specs",
        str(project.specs_file),
        "--apt-packages",
        "",
    ]


def wait_for(check: object, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"harness exited early ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def owner_containers(pid: int) -> list[str]:
    import socket

    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=harness.owner={socket.gethostname()}:{pid}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@pytest.mark.docker
def test_run_killed_with_sigkill_then_resumed(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=3)
    out = tmp_path / "run"
    log = tmp_path / "harness.log"
    env = {"HARNESS_CACHE_DIR": str(tmp_path / "cache"), DELAY_ENV: "8"}
    first_id = project.records[0]["instance_id"]
    args = [
        "run",
        "--dataset",
        str(project.dataset),
        "--out",
        str(out),
        "--workers",
        "1",
        "--solver",
        "tests.evals.solvers:known_patch_for",
        *common(project),
    ]
    proc = harness(args, env, log)

    def first_done_second_started() -> bool:
        done = sum(1 for g in read_jsonl(out / GRADES) if g["instance_id"] == first_id) == 4
        calls = out / CALLS_LOG
        return done and calls.exists() and len(calls.read_text().split()) == 2

    wait_for(first_done_second_started, 300, proc, log)
    proc.send_signal(signal.SIGKILL)  # mid-way through the second instance's solve
    assert proc.wait(30) == -signal.SIGKILL
    assert len(list(read_jsonl(out / SOLVES))) == 1
    # The killed process's sandboxes go away by themselves (their agent's lease closed).
    deadline = time.monotonic() + 30
    while owner_containers(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert owner_containers(proc.pid) == []

    # --resume DIR alone: the data set and selection come from run.json
    resume = harness(
        [
            "run",
            "--resume",
            str(out),
            "--solver",
            "tests.evals.solvers:known_patch_for",
            *common(project),
        ],
        {**env, DELAY_ENV: "0"},
        log,
    )
    assert resume.wait(300) == 0, log.read_text()[-3000:]
    calls = Counter((out / CALLS_LOG).read_text().split())
    ids = [r["instance_id"] for r in project.records]
    assert calls == {ids[0]: 1, ids[1]: 2, ids[2]: 1}  # only the cut-short solve is redone
    grades = read_grades(out / GRADES)
    assert Counter(g.instance_id for g in grades) == {i: 4 for i in ids}
    assert all(g.resolved for g in grades if g.candidate_id == "final")
    text = log.read_text()
    assert "resolved 3/3 (100.0%)" in text
    for name in ("report.md", "report.html", "plots/scaling.png", "plots/stages.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "plots" / "scaling.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.docker
def test_grade_gold_stopped_with_sigterm_then_resumed(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=3)
    out = tmp_path / "gold"
    log = tmp_path / "harness.log"
    env = {"HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    args = [
        "grade",
        "--gold",
        "--dataset",
        str(project.dataset),
        "--out",
        str(out),
        *common(project),
    ]
    proc = harness(args, env, log)
    wait_for(lambda: len(list(read_jsonl(out / GRADES))) >= 1, 300, proc, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130  # cancelled cleanly, like Ctrl-C
    before = len(list(read_jsonl(out / GRADES)))
    assert 1 <= before < 3
    # The old spelling (--out DIR --resume) still works for one release, with a warning.
    resume = harness([*args, "--resume"], env, log)
    assert resume.wait(300) == 0, log.read_text()[-3000:]
    assert "--resume without a directory is deprecated" in log.read_text()
    grades = read_grades(out / GRADES)
    assert sorted(g.instance_id for g in grades) == sorted(
        r["instance_id"] for r in project.records
    )
    assert {g.status for g in grades} == {"resolved"}


def test_cli_input_errors(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", "eval", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")},
        )

    res = run("report", str(tmp_path))
    assert res.returncode == 2 and "has no grades.jsonl" in res.stderr
    project = make_project(tmp_path / "p")
    res = run(
        "run", "--dataset", str(project.dataset), "--out", str(tmp_path / "o"), "-c", "samples=lots"
    )  # the default solver is the pipeline: its config is checked
    assert res.returncode == 2 and "must be an integer" in res.stderr
    res = run(
        "run",
        "--dataset",
        str(project.dataset),
        "--out",
        str(tmp_path / "o"),
        "--solver",
        "no_such_module:x",
    )
    assert res.returncode == 2 and "--solver 'no_such_module:x': cannot import it" in res.stderr
    res = run("grade", str(project.dataset), "--gold", "--dataset", str(project.dataset))
    assert res.returncode == 2 and "not both" in res.stderr
    res = run("grade", "--gold", "--dataset", str(project.dataset), "--slice", "x:y")
    assert res.returncode == 2 and "--slice" in res.stderr
