"""Parallel efficiency of `harness solve` and the time lost to stage barriers.

A solve of the bundled example with N = 1, 4, 8, 16 samples: a scripted model with a fixed
per-call latency (examples/scripted/durations_oracle.py) and real docker sandboxes. Compares
the wall time of the sampling phase with the sum of per-trajectory times (speedup and
efficiency), and reports the barrier loss: sampling-phase wall time minus the slowest
trajectory (zero when no sample waits for another), next to what a testing/editing barrier
(CodeMonkeys' design) would have added on the same trajectories.

    python benchmarks/solve_pipeline.py [--latency 0.5] [--samples 1,4,8,16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from examples.scripted.durations_oracle import respond  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.llm.scripted import ScriptedLLM  # noqa: E402
from harness.orchestrator import Orchestrator  # noqa: E402
from harness.sandboxes.docker import DockerBackend  # noqa: E402
from harness.tasks import make_task  # noqa: E402


async def one(n: int, latency: float, cache: Path, work: Path) -> dict[str, object]:
    task, _ = await make_task(
        str(ROOT / "examples/durations.issue.md"), str(ROOT / "examples/durations"), None, cache
    )
    config = load_config(
        None, [f"samples={n}", "concurrency.execs=4", f"concurrency.llm_calls={max(n, 1)}"]
    )
    llm = ScriptedLLM(respond, latency_s=latency)
    async with DockerBackend(cache) as backend:
        orch = Orchestrator(config, llm, backend)
        start = time.perf_counter()
        result = await orch.solve(task, work / f"run-{n}")
        wall = time.perf_counter() - start
    summary = json.loads((result.run_dir / "summary.json").read_text())
    per = [s["seconds"] for s in summary["samples"]]
    testing = [s["testing_seconds"] for s in summary["samples"]]
    editing = [s["seconds"] - s["testing_seconds"] for s in summary["samples"]]
    phase = summary["timings_s"]["samples"]
    speedup = sum(per) / phase
    return {
        "samples": n,
        "wall_s": round(wall, 3),
        "timings_s": summary["timings_s"],
        "sum_trajectory_s": round(sum(per), 3),
        "slowest_trajectory_s": round(max(per), 3),
        "speedup": round(speedup, 2),
        "parallel_efficiency": round(speedup / n, 3),
        "barrier_loss_s": round(phase - max(per), 3),
        "testing_barrier_would_add_s": round(max(testing) + max(editing) - max(per), 3),
        "model_calls": len(llm.requests),
        "status": result.status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    parser.add_argument("--samples", default="1,4,8,16")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/solve_pipeline.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.samples.split(",")):
            row = asyncio.run(one(n, args.latency, Path(tmp) / "cache", Path(tmp)))
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {
        "benchmark": "solve_pipeline",
        "machine": describe(),
        "model_latency_s": args.latency,
        "backend": "docker",
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
