"""The whole pipeline on real SWE-bench Lite instances, with an oracle for the model.

`harness eval run` solves and grades real instances from local git mirrors, its solver the
harness pipeline on benchmarks/real_oracle.py (the known fix, a reproduction script built
from the hidden tests, a decoy sample). Checks: every instance resolved, every sample's
reproduction script fails on the original code (exit 2), the selection picks the fix over
the decoy. Reports the time per stage and the measured tool-call timings (sandbox exec
seconds per stage and repository; the gap after each model turn per tool hint), and writes
those gaps to benchmarks/results/tool_gaps.json, which benchmarks/agent_workload.py replays.

    python benchmarks/real_pipeline.py --git-mirror '/srv/mirrors/{owner}+{name}/repo'

Needs Docker and mirrors of the repositories (the default test suite cannot fetch them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from benchmarks.real_oracle import (  # noqa: E402
    ANSWERS_ENV,
    NotExpressible,
    answer_for,
    file_diffs,
)
from harness.evals.toolgaps import tool_times  # noqa: E402
from harness.store import read_jsonl  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "swebench_lite_test.jsonl"
# Four repositories, two instances each (one environment image per repository), two Debian
# suites, both reproduction modes (pytest node ids, sympy's plain test functions), gold
# patches whose FAIL_TO_PASS tests need no network.
INSTANCES = (
    "pallets__flask-4992",
    "pallets__flask-5063",
    "pytest-dev__pytest-5221",
    "pytest-dev__pytest-5227",
    "pylint-dev__pylint-7080",
    "pylint-dev__pylint-7114",
    "sympy__sympy-19487",
    "sympy__sympy-20590",
)
RESULTS = ROOT / "benchmarks" / "results"


def git_show(mirror: Path, commit: str, path: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(mirror), "show", f"{commit}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def prepare(
    records: Sequence[dict[str, Any]], mirror: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The oracle's answers for the records it can express, and why it skips the others."""
    answers: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for rec in records:
        owner, name = rec["repo"].split("/")
        repo = Path(mirror.format(owner=owner, name=name))
        originals = {
            old: git_show(repo, rec["base_commit"], old)
            for old, _, _ in file_diffs(rec["patch"])
            if old != "/dev/null"
        }
        try:
            answers.append(answer_for(rec, originals).to_json())
        except NotExpressible as exc:
            skipped[rec["instance_id"]] = str(exc)
    return answers, skipped


def stats(values: Iterable[float]) -> dict[str, Any]:
    vals = sorted(values)
    if not vals:
        return {"n": 0}
    logs = [math.log(max(v, 1e-3)) for v in vals]
    return {
        "n": len(vals),
        "median_s": round(statistics.median(vals), 3),
        "mean_s": round(statistics.fmean(vals), 3),
        "p90_s": round(vals[max(0, math.ceil(0.9 * len(vals)) - 1)], 3),
        "max_s": round(vals[-1], 3),
        # lognormal fit: median exp(mu), shape sigma (what agent_workload.py draws from)
        "lognormal_sigma": round(statistics.pstdev(logs), 3) if len(logs) > 1 else 0.0,
    }


def sample_checks(run_dir: Path) -> dict[str, Any]:
    """Per sample: the reproduction script's exit code on the original code."""
    originals: dict[str, int | None] = {}
    for path in sorted((run_dir / "trajectories").glob("*.jsonl")):
        codes = [
            e["result"]["exit_code"]
            for e in read_jsonl(path)
            if e.get("kind") == "exec" and e.get("what") == "original" and e.get("result")
        ]
        originals[path.stem] = codes[0] if codes else None
    summary = json.loads((run_dir / "summary.json").read_text())
    cut = [
        f"{path.stem}:{e.get('stage')}:{e.get('turn')}"
        for path in [
            *sorted((run_dir / "trajectories").glob("*.jsonl")),
            run_dir / "selection.jsonl",
        ]
        for e in read_jsonl(path)
        if e.get("kind") == "llm" and e.get("finish_reason") == "length"
    ]
    return {"original_exit_codes": originals, "summary": summary, "cut_replies": cut}


def analyse(out: Path, answers: list[dict[str, Any]], repo_of: dict[str, str]) -> dict[str, Any]:
    solves = {s["instance_id"]: s for s in read_jsonl(out / "solves.jsonl") if "status" in s}
    grades = {(g["instance_id"], g["candidate_id"]): g for g in read_jsonl(out / "grades.jsonl")}
    rows = []
    execs: dict[str, dict[str, list[float]]] = {}
    gaps: dict[str, dict[str, list[float]]] = {}
    for ans in answers:
        ident = ans["instance_id"]
        solve = solves.get(ident, {})
        final = grades.get((ident, "final"), {})
        run_dir = out / "instances" / ident / "solve"
        checks = sample_checks(run_dir) if (run_dir / "summary.json").exists() else {}
        summary = checks.get("summary", {})
        codes = checks.get("original_exit_codes", {})
        repo = repo_of[ident]
        # The same reading `harness eval run` records in solves.jsonl (exec_s, gap_s), done
        # again here so that an earlier run directory is read with the current rules.
        exec_s, gap_s = tool_times(run_dir) if run_dir.is_dir() else ({}, {})
        for stage, vals in exec_s.items():
            execs.setdefault(repo, {}).setdefault(stage, []).extend(vals)
        for tool, vals in gap_s.items():
            gaps.setdefault(repo, {}).setdefault(tool, []).extend(vals)
        winner = summary.get("winner")
        decoy = grades.get((ident, "sample-01"), {})
        rows.append(
            {
                "instance_id": ident,
                "repo": repo,
                "resolved": final.get("status") == "resolved",
                "final_status": final.get("status"),
                "repro_fails_on_original": bool(codes) and all(c == 2 for c in codes.values()),
                "original_exit_codes": codes,
                "cut_replies": checks.get("cut_replies", []),
                "winner": winner,
                "selected_by": summary.get("selected_by"),
                "candidates": len(solve.get("candidates") or ()),
                "decoy_status": decoy.get("status"),
                "selection_picks_fix": summary.get("selected_by") == "model"
                and winner not in (None, "sample-01")
                and final.get("status") == "resolved"
                and len(solve.get("candidates") or ()) >= 2,
                "solve_s": round(float(solve.get("duration_s") or 0.0), 2),
                "solve_stage_s": solve.get("stage_s") or {},
                "grade_stage_s": {k: round(v, 2) for k, v in (final.get("timings") or {}).items()},
                "exec_s": {k: stats(v) for k, v in exec_s.items()},
                "gap_s": {k: stats(v) for k, v in gap_s.items()},
            }
        )
    return {"instances": rows, "execs": execs, "gaps": gaps}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--git-mirror", required=True, help="path template with {owner}, {name}")
    ap.add_argument("--dataset", default=str(DATASET))
    ap.add_argument("--instances", default=",".join(INSTANCES))
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--work", default="", help="keep the run directory here")
    ap.add_argument("--out", default=str(RESULTS / "real_pipeline.json"))
    ap.add_argument("--gaps", default=str(RESULTS / "tool_gaps.json"))
    ap.add_argument(
        "--analyse-only", action="store_true", help="read the run in --work again, run nothing"
    )
    args = ap.parse_args(argv)

    wanted = [i for i in args.instances.split(",") if i]
    records = {r["instance_id"]: r for r in read_jsonl(Path(args.dataset))}
    missing = [i for i in wanted if i not in records]
    if missing:
        print(f"not in {args.dataset}: {', '.join(missing)}", file=sys.stderr)
        return 2
    chosen = [records[i] for i in wanted]
    answers, skipped = prepare(chosen, args.git_mirror)
    work = Path(args.work or tempfile.mkdtemp(prefix="real-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "answers.json").write_text(json.dumps(answers))
    subset = work / "instances.jsonl"
    kept = {a["instance_id"] for a in answers}
    subset.write_text("".join(json.dumps(records[i]) + "\n" for i in wanted if i in kept))
    out = work / "run"
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "eval",
        "run",
        "--dataset",
        str(subset),
        "--solver",
        "benchmarks.real_oracle:solver",
        "--model-name",
        "oracle",
        "--git-mirror",
        args.git_mirror,
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        ANSWERS_ENV: str(work / "answers.json"),
        "ORACLE_SAMPLES": str(args.samples),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    machine = describe()  # while the run goes (an --analyse-only reads the run's own)
    if args.analyse_only:
        ran = json.loads((work / "wall.json").read_text())
        wall, machine = float(ran["wall_s"]), ran.get("machine", machine)
    else:
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
        (work / "eval-run.log").write_text(done.stdout + done.stderr)
        (work / "wall.json").write_text(json.dumps({"wall_s": wall, "machine": machine}))
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            return 1
    repo_of = {r["instance_id"]: r["repo"] for r in chosen}
    found = analyse(out, answers, repo_of)
    rows = found["instances"]
    by_tool: dict[str, list[float]] = {}
    by_stage: dict[str, list[float]] = {}
    for repo_gaps in found["gaps"].values():
        for tool, vals in repo_gaps.items():
            by_tool.setdefault(tool, []).extend(vals)
    for repo_execs in found["execs"].values():
        for stage, vals in repo_execs.items():
            by_stage.setdefault(stage, []).extend(vals)
    stage_totals: dict[str, float] = {}
    for row in rows:
        for k, v in {**row["solve_stage_s"], **row["grade_stage_s"]}.items():
            stage_totals[k] = round(stage_totals.get(k, 0.0) + float(v), 2)
    checks = {
        "every_instance_resolved": all(r["resolved"] for r in rows),
        "repro_scripts_fail_on_original": all(r["repro_fails_on_original"] for r in rows),
        "selection_picks_the_fix": all(r["selection_picks_fix"] for r in rows),
        "no_reply_cut_by_max_tokens": not any(r["cut_replies"] for r in rows),
        "repositories": len({r["repo"] for r in rows}),
    }
    result = {
        "benchmark": "real_pipeline",
        "machine": machine,
        "command": " ".join(cmd[2:]).replace(str(work), "WORK").replace(args.git_mirror, "MIRROR"),
        "samples_per_instance": args.samples,
        "model": "oracle (benchmarks/real_oracle.py): gold patch as edit blocks, hidden tests "
        "as the reproduction script, sample-01 a decoy; scripted, no latency",
        "wall_s": round(wall, 1),
        "checks": checks,
        "skipped": skipped,
        "stage_totals_s": stage_totals,
        "instances": rows,
        "exec_s_by_repo": {
            repo: {stage: stats(v) for stage, v in stages.items()}
            for repo, stages in found["execs"].items()
        },
        "gap_s_by_repo": {
            repo: {tool: stats(v) for tool, v in tools.items()}
            for repo, tools in found["gaps"].items()
        },
    }
    gaps = {
        "source": "benchmarks/real_pipeline.py: the harness pipeline on real SWE-bench Lite "
        "instances (oracle model, no model latency), per tool hint the seconds between a "
        "model reply and the same program's next request; per stage the sandbox exec seconds",
        "machine": machine,
        "instances": [r["instance_id"] for r in rows],
        "tools": {tool: {**stats(v), "samples": sorted(v)} for tool, v in by_tool.items()},
        "exec": {stage: stats(v) for stage, v in by_stage.items()},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.gaps).write_text(json.dumps(gaps, indent=1) + "\n")
    print(json.dumps({"checks": checks, "wall_s": result["wall_s"], "work": str(work)}))
    ok = checks["every_instance_resolved"] and checks["repro_scripts_fail_on_original"]
    ok = ok and checks["selection_picks_the_fix"] and checks["repositories"] >= 3
    ok = ok and checks["no_reply_cut_by_max_tokens"]
    return 0 if ok and not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
