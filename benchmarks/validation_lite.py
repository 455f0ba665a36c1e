"""The grading-fidelity record: a `harness eval validate` output directory as a results JSON.

Reads OUT/validation.jsonl (gold and empty grades of SWE-bench Lite instances) and writes
benchmarks/results/validation_lite.json: the machine and harness commit, the per-repository
table, per instance and kind the outcome and timings, and the two headline rates (gold
resolved over instances that can run here: target >= 97%; empty resolved: target 0%).
Host paths are left out (the file is committed).

    harness eval validate --dataset D --git-mirror M --out OUT ...   # the grades
    python benchmarks/validation_lite.py OUT [--doc docs/eval.md]     # this record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from harness.evals.validate import (  # noqa: E402
    CANNOT_RUN,
    Check,
    read_checks,
    redact,
    render_table,
    replace_section,
    summarize,
)

RESULT = ROOT / "benchmarks" / "results" / "validation_lite.json"


def commit() -> str:
    run = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return run.stdout.strip() or "unknown"


def outcome(c: Check) -> dict[str, Any]:
    return {
        "instance_id": c.instance_id,
        "repo": c.repo,
        "version": c.version,
        "kind": c.kind,
        "status": c.status,
        "counts_resolved": c.counts_resolved,
        "resolved_offline": c.resolved_offline,
        "failed": list(c.failed),
        "network": list(c.network),
        "network_f2p": list(c.network_f2p),
        "python_used": c.python_used,
        "message": redact(c.message),
        "timings_s": {k: round(v, 2) for k, v in c.timings.items()},
    }


def record(checks: Sequence[Check], machine: dict[str, Any], graded_by: str) -> dict[str, Any]:
    rows = summarize(checks)
    can_run = sum(r.can_run for r in rows)
    gold = sum(r.gold_resolved for r in rows)
    instances = sum(r.instances for r in rows)
    empty = sum(r.empty_resolved for r in rows)
    return {
        "benchmark": "validation_lite",
        "dataset": "SWE-bench Lite, test split",
        "harness_commit": graded_by,
        "machine": machine,
        "gold_resolved_of_runnable": {"resolved": gold, "runnable": can_run},
        "gold_rate": round(gold / can_run, 4) if can_run else None,
        "instances_listed": instances,
        # An empty patch that resolves anywhere counts; the rate is over what can run.
        "empty_resolved_of_runnable": {"resolved": empty, "runnable": can_run},
        "empty_rate": round(empty / can_run, 4) if can_run else None,
        "cannot_run_statuses": list(CANNOT_RUN),
        "repositories": [asdict(r) for r in rows],
        "checks": [outcome(c) for c in sorted(checks, key=lambda c: (c.instance_id, c.kind))],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a `harness eval validate` output directory")
    ap.add_argument("--doc", type=Path, help="also put the table between its markers")
    ap.add_argument("--result", type=Path, default=RESULT)
    ap.add_argument("--commit", help="the harness commit that graded (default: HEAD)")
    args = ap.parse_args(argv)
    checks = read_checks(args.out)
    if not checks:
        print(f"{args.out} holds no validation records", file=sys.stderr)
        return 2
    ran = args.out / "validation.json"
    machine = describe()
    if ran.is_file():  # the machine as the grades saw it (load while they ran)
        machine = {**machine, "during_run": json.loads(ran.read_text()).get("machine", {})}
    data = record(checks, machine, args.commit or commit())
    args.result.write_text(json.dumps(data, indent=1) + "\n")
    table = render_table(summarize(checks))
    if args.doc is not None:
        replace_section(args.doc, table)
    print(table)
    print(f"gold {data['gold_rate']}, empty {data['empty_rate']} -> {args.result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
