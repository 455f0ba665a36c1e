"""Parallel efficiency of `harness solve` and the time lost to stage barriers.

A solve of the bundled example with N = 1, 4, 8, 16 samples: a scripted model
(examples/scripted/durations_oracle.py) with a per-call latency — fixed, or drawn from a
seeded log-normal around it (`--jitter`), since real calls vary — and real docker sandboxes.
Compares the wall time of the sampling phase with the sum of per-trajectory times (speedup and
efficiency), and reports the barrier loss: sampling-phase wall time minus the slowest
trajectory (zero when no sample waits for another), next to what a testing/editing barrier
(CodeMonkeys' design) would have added on the same trajectories.

    python benchmarks/solve_pipeline.py [--latency 0.5] [--jitter 0.8] [--samples 1,4,8,16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from examples.scripted.durations_oracle import respond  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.llm.base import ChatRequest, ChatResponse  # noqa: E402
from harness.llm.engine.spec_policy import SpecStats  # noqa: E402
from harness.llm.scripted import ScriptedLLM  # noqa: E402
from harness.orchestrator import Orchestrator  # noqa: E402
from harness.sandboxes.docker import DockerBackend  # noqa: E402
from harness.tasks import make_task  # noqa: E402


class JitterLLM:
    """Delays each call by a log-normal time with mean `mean` (seeded), then answers."""

    def __init__(self, inner: ScriptedLLM, mean: float, sigma: float, seed: int) -> None:
        self.inner, self.mean, self.sigma = inner, mean, sigma
        self.rng = random.Random(seed)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    async def chat(self, request: ChatRequest) -> ChatResponse:
        mu = math.log(self.mean) - self.sigma**2 / 2  # so that the mean is `mean`
        await asyncio.sleep(self.rng.lognormvariate(mu, self.sigma) if self.sigma else self.mean)
        return await self.inner.chat(request)

    def speculation_stats(self) -> SpecStats | None:
        return self.inner.speculation_stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def one(n: int, latency: float, jitter: float, cache: Path, work: Path) -> dict[str, object]:
    task, _ = await make_task(
        str(ROOT / "examples/durations.issue.md"), str(ROOT / "examples/durations"), None, cache
    )
    config = load_config(
        None, [f"samples={n}", "concurrency.execs=4", f"concurrency.llm_calls={max(n, 1)}"]
    )
    scripted = ScriptedLLM(respond)
    llm = JitterLLM(scripted, latency, jitter, seed=n)
    async with DockerBackend(cache) as backend:
        orch = Orchestrator(config, llm, backend)
        start = time.perf_counter()
        result = await orch.solve(task, work / f"run-{n}-{jitter}")
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
        "voting_tail_s": summary["timings_s"]["voting_tail"],
        "model_calls": len(scripted.requests),
        "status": result.status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.5, help="mean seconds per call")
    parser.add_argument(
        "--jitter", type=float, default=0.8, help="sigma of the log-normal call latency (0 = fixed)"
    )
    parser.add_argument("--samples", default="1,4,8,16")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/solve_pipeline.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Fixed latency isolates contention; jittered latency is what real calls look like.
        for label, sigma in (("fixed_latency", 0.0), ("jittered_latency", args.jitter)):
            rows = runs.setdefault(label, [])
            for n in (int(x) for x in args.samples.split(",")):
                row = asyncio.run(one(n, args.latency, sigma, Path(tmp) / "cache", Path(tmp)))
                print(label, json.dumps(row), flush=True)
                rows.append(row)
    report = {
        "benchmark": "solve_pipeline",
        "machine": describe(),
        "model_latency_mean_s": args.latency,
        "latency_lognormal_sigma": args.jitter,
        "backend": "docker",
        "definitions": {
            "parallel_efficiency": "sum of per-trajectory times / (samples x sampling-phase "
            "wall time)",
            "barrier_loss_s": "sampling-phase wall time minus the slowest trajectory: time "
            "any sample spent waiting on another (0 without stage barriers)",
            "testing_barrier_would_add_s": "max testing time + max editing time - slowest "
            "trajectory: what a barrier between the stages would cost on these trajectories",
            "voting_tail_s": "from the last sample's end to a complete vote matrix",
        },
        "results": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
