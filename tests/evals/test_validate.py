"""`harness eval validate`: gold and empty grades per instance, the table, image pruning."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.evals.dataset import load_instances
from harness.evals.validate import (
    MARK_END,
    MARK_START,
    RECORDS,
    Check,
    network_failures,
    plan,
    read_checks,
    render_table,
    summarize,
)
from tests.evals.conftest import SPEC, make_project
from tests.evals.test_cli import ROOT
from tests.sandboxes.conftest import skip_unless_available


def check(ident: str, kind: str, status: str, version: str = "1.0", **kw: object) -> Check:
    return Check(ident, "acme/w", version, kind, status, **kw)  # type: ignore[arg-type]


def test_plan_groups_by_repo_and_version_and_caps_each(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=3)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    assert [len(g) for g in plan(insts)] == [3]
    assert [[i.instance_id for i in g] for g in plan(insts, 1)] == [["harness-tests__calc-1"]]


def test_the_table_counts_medians_and_names_every_exception() -> None:
    checks = [
        check("a-1", "gold", "resolved", timings={"env_build": 100.0, "tests": 4.0}),
        check("a-1", "empty", "unresolved", timings={"tests": 3.0}),
        check("a-2", "gold", "unresolved", "2.0", failed=("t::x",), timings={"tests": 8.0}),
        check("a-2", "empty", "resolved", "2.0", timings={"env_build": 300.0}),
        check("a-3", "gold", "env_build_failed", "3.0", message="no wheel for numpy"),
        check("a-3", "empty", "env_build_failed", "3.0"),
        check("a-4", "gold", "resolved", "3.0"),  # its empty grade is not recorded yet
    ]
    (row,) = summarize(checks)
    assert (row.instances, row.can_run, row.gold_resolved, row.empty_resolved) == (3, 2, 1, 1)
    assert row.versions == ("1.0", "2.0", "3.0")
    assert (row.env_build_s, row.tests_s) == (200.0, 6.0)
    assert row.exceptions == (
        "a-2 (2.0) gold unresolved: t::x",
        "a-3 (3.0) gold env_build_failed: no wheel for numpy",
        "a-2 (2.0) empty patch resolves",
    )
    table = render_table([row], {"acme/w": "needs the network"})
    assert "| acme/w | 1.0, 2.0, 3.0 | 3 | 2 | 1 | 1 | 200 | reused | 6 |" in table
    assert "| **all** | | 3 | 2 | 1 (50.0%) | 1 |" in table
    assert "- a-2 (2.0) empty patch resolves" in table and "- acme/w: needs the network" in table


# The shape of a pytest log from requests' tests run offline (trimmed from a real one).
OFFLINE_LOG = """\
==================================== ERRORS ====================================
__________ ERROR at setup of TestRequests.test_no_content_length[GET] __________
E       recursive dependency involving fixture 'httpbin' detected
=================================== FAILURES ===================================
_______________________ TestTimeout.test_connect_timeout _______________________
E   requests.exceptions.ConnectionError: HTTPConnectionPool(host='10.255.255.1', port=80): \
Failed to establish a new connection: [Errno 101] Network is unreachable'))
__ RequestsTestSuite.test_accept_objects_with_string_representations_as_urls ___
E       socket.gaierror: [Errno -3] Temporary failure in name resolution
________________________ TestRequests.test_decode[utf8] ________________________
E       AssertionError: assert 'x' == 'y'
=========================== short test summary info ============================
FAILED tests/t.py::TestTimeout::test_connect_timeout - Network is unreachable
FAILED tests/t.py::TestRequests::test_decode[utf8] - AssertionError
"""


def test_network_failures_are_told_apart_by_their_own_section() -> None:
    failed = (
        "tests/t.py::TestTimeout::test_connect_timeout",
        "tests/t.py::RequestsTestSuite::test_accept_objects_with_string_representations_as_urls",
        "tests/t.py::TestRequests::test_decode[utf8]",  # the summary line says "Network": no
        "tests/t.py::TestRequests::test_no_content_length[GET]",
        "tests/t.py::test_never_ran",
    )
    assert network_failures(OFFLINE_LOG, failed) == failed[:2]
    assert network_failures("no sections at all", failed) == ()


def test_network_rule_decides_what_can_run_and_names_the_tests() -> None:
    net = "t::net"
    checks = [
        # FAIL_TO_PASS needs the network: not runnable, whatever the grades say.
        check("n-1", "gold", "unresolved", failed=(net,), network=(net,), network_f2p=(net,)),
        check("n-1", "empty", "unresolved", failed=(net,), network=(net,), network_f2p=(net,)),
        # Only PASS_TO_PASS tests need it: graded with them left out.
        check("n-2", "gold", "unresolved", failed=(net,), network=(net,)),
        check("n-2", "empty", "unresolved", failed=("t::f2p", net), network=(net,)),
        # A real failure beside a network one is still a failure.
        check("n-3", "gold", "unresolved", failed=("t::x", net), network=(net,)),
        check("n-3", "empty", "unresolved", failed=("t::x",)),
        # The empty patch is held to the same rule: it resolves once the network is left out.
        check("n-4", "gold", "resolved"),
        check("n-4", "empty", "unresolved", failed=(net,), network=(net,)),
    ]
    (row,) = summarize(checks)
    assert (row.instances, row.can_run, row.gold_resolved, row.empty_resolved) == (4, 3, 2, 1)
    assert row.exceptions == (
        "n-1 (1.0) cannot run here, FAIL_TO_PASS tests need the network: t::net",
        "n-2 (1.0) gold resolved, leaving out PASS_TO_PASS tests that need the network: t::net",
        "n-3 (1.0) gold unresolved: t::x, t::net",
        "n-4 (1.0) empty patch resolves",
    )
    # Records written before the network fields existed read back as "no network failure".
    old = {k: v for k, v in dataclasses.asdict(checks[2]).items() if "network" not in k}
    assert not Check.from_json(old).resolved_offline


def test_causes_shared_by_instances_share_a_line_without_host_paths() -> None:
    why = "building env failed: pip said no (log: /somewhere/.cache/env-logs/x.log)\nmore output"
    checks = [
        check(f"e-{i}", kind, "env_build_failed", message=why)
        for i in (1, 2)
        for kind in ("gold", "empty")
    ]
    checks += [
        check("m-1", kind, "repo_failed", "2.0", message="no mirror of o/n at /srv/m/o+n/repo")
        for kind in ("gold", "empty")
    ]
    (row,) = summarize(checks)
    assert row.exceptions == (
        "e-1 (1.0), e-2 (1.0) gold env_build_failed: building env failed: pip said no",
        "m-1 (2.0) gold repo_failed: no mirror of o/n",
    )


@pytest.mark.docker
def test_validate_cli_grades_gold_and_empty_and_prunes_its_images(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=2)
    # Its own env image (a spec no other test uses), so pruning it takes nothing from them.
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps({"harness-tests/calc": {"1.0": {**SPEC, "pre_install": ["true"]}}}))
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Doc\n\n{MARK_START}\nold table\n{MARK_END}\n\nafter\n")
    out = tmp_path / "val"
    args = [
        sys.executable,
        "-m",
        "harness",
        "eval",
        "validate",
        "--dataset",
        str(project.dataset),
        "--git-mirror",
        project.mirror,
        "--specs",
        str(specs),
        "--apt-packages",
        "",
        "--out",
        str(out),
        "--doc",
        str(doc),
        "--prune-images",
    ]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    checks = {(c.instance_id, c.kind): c for c in read_checks(out)}
    assert len(checks) == 4
    for ident in ("harness-tests__calc-1", "harness-tests__calc-2"):
        assert checks[(ident, "gold")].status == "resolved"
        empty = checks[(ident, "empty")]
        assert empty.status == "unresolved" and empty.failed == ("tests/test_calc.py::test_add",)
        assert (out / empty.log_path).is_file()
    row = "| harness-tests/calc | 1.0 | 2 | 2 | 2 | 0 |"
    assert row in (out / "validation.md").read_text() and row in doc.read_text()
    assert "old table" not in doc.read_text() and doc.read_text().endswith("\nafter\n")
    assert "removed" in done.stderr
    image = checks[("harness-tests__calc-1", "gold")].image
    gone = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
    assert image and gone.returncode != 0  # pruned with its group

    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a validation" in again.stderr
    assert f"--resume {out}" in again.stderr  # the hint names the spelling that works
    lines = (out / RECORDS).read_text().count("\n")
    resumed = subprocess.run(
        [*args, "--resume", str(out), "--per-version", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / RECORDS).read_text().count("\n") == lines  # nothing graded twice


@pytest.mark.docker
def test_retry_failed_grades_again_what_could_not_run(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=1)
    out = tmp_path / "val"
    out.mkdir()
    ident = "harness-tests__calc-1"
    stale = [
        Check(ident, "harness-tests/calc", "1.0", kind, "env_build_failed", "pip failed")
        for kind in ("gold", "empty")
    ]
    (out / RECORDS).write_text("".join(json.dumps(dataclasses.asdict(c)) + "\n" for c in stale))
    args = [
        sys.executable,
        "-m",
        "harness",
        "eval",
        "validate",
        "--dataset",
        str(project.dataset),
        "--git-mirror",
        project.mirror,
        "--specs",
        str(project.specs_file),
        "--apt-packages",
        "",
        "--resume",
        str(out),
    ]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}

    def run(*extra: str) -> dict[str, str]:
        done = subprocess.run(
            [*args, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return {c.kind: c.status for c in read_checks(out)}

    assert run() == {"gold": "env_build_failed", "empty": "env_build_failed"}  # kept
    assert run("--retry-failed") == {"gold": "resolved", "empty": "unresolved"}


def test_the_committed_record_names_rates_and_leaves_out_host_paths(tmp_path: Path) -> None:
    from benchmarks.validation_lite import main

    out = tmp_path / "out"
    out.mkdir()
    host_log = tmp_path / "env-logs" / "x.log"  # a path of this host: must not be committed
    checks = [
        check("a-1", "gold", "resolved", timings={"tests": 4.0}),
        check("a-1", "empty", "unresolved", failed=("t::x",)),
        check("a-2", "gold", "env_build_failed", message=f"pip failed (log: {host_log})"),
        check("a-2", "empty", "env_build_failed", message=f"pip failed (log: {host_log})"),
    ]
    (out / RECORDS).write_text("".join(json.dumps(dataclasses.asdict(c)) + "\n" for c in checks))
    doc = tmp_path / "eval.md"
    doc.write_text(f"# Eval\n{MARK_START}\nstale table\n{MARK_END}\ntail\n")
    result = tmp_path / "validation_lite.json"
    assert main([str(out), "--doc", str(doc), "--result", str(result), "--commit", "abc"]) == 0
    data = json.loads(result.read_text())
    assert (data["gold_rate"], data["empty_rate"], data["harness_commit"]) == (1.0, 0.0, "abc")
    assert data["gold_resolved_of_runnable"] == {"resolved": 1, "runnable": 1}
    assert str(host_log.parent) not in result.read_text() and "machine" in data
    assert "| acme/w | 1.0 | 2 | 1 | 1 | 0 |" in doc.read_text() and "stale" not in doc.read_text()
    assert main([str(tmp_path / "empty")]) == 2
