"""Grading throughput: graded instances per hour with 1 and 2 workers, and where time goes.

Grades the gold patches of real SWE-bench Lite instances (local git mirrors: `--git-mirror`)
or, without mirrors, of the synthetic `calc` project the tests use (`--synthetic N`). Each
worker count runs twice: cold (the instances' env images rebuilt from scratch, no docker
layer cache) and warm (images reused). The Debian base and the per-suite apt layer are
machine setup, built before timing starts. Stage shares are of summed per-grade time.

    python benchmarks/eval_throughput.py --dataset LITE.jsonl \
        --git-mirror '/m/{owner}+{name}/repo' --instances psf__requests-1963,... \
        [--workers 1,2] [--out FILE.json]
    python benchmarks/eval_throughput.py --synthetic 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe
from harness.evals.batch import GRADES, Batch
from harness.evals.dataset import Instance, Selection, load_instances, select
from harness.evals.envimages import EnvImages, EnvOptions
from harness.evals.executors import LocalExecutor
from harness.evals.predictions import Prediction
from harness.evals.records import read_grades
from harness.evals.repos import RepoCache
from harness.evals.specs import SpecRegistry
from harness.evals.worker import EvalConfig

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
STAGES = ("env_image", "checkout", "apply", "tests")


async def warm_up(config: EvalConfig, insts: list[Instance]) -> None:
    """Build the machine-level layers (Debian bases, apt packages) before timing."""
    repos = RepoCache(config.cache_dir, config.git_mirror)
    images = EnvImages(config.cache_dir, repos, config.env)
    try:
        for suite_python in sorted(
            {s.python for i in insts if (s := config.specs.get(i.repo, i.version))}
        ):
            from harness.evals.specs import debian_python

            _, suite = debian_python(suite_python)
            await images._suite_image(await images.client(), suite, print)
    finally:
        await images.aclose()


async def grade_all(
    config: EvalConfig, insts: list[Instance], workers: int, out: Path
) -> dict[str, Any]:
    preds = [Prediction(i.instance_id, i.patch, "gold") for i in insts]
    start = time.monotonic()
    async with LocalExecutor(config) as ex:
        await Batch(out, ex, workers=workers).grade(insts, preds)
    wall = time.monotonic() - start
    grades = read_grades(out / GRADES)
    stage = {s: sum(g.timings.get(s, 0.0) for g in grades) for s in STAGES}
    total = sum(stage.values()) or 1.0
    statuses: dict[str, int] = {}
    for g in grades:
        statuses[g.status] = statuses.get(g.status, 0) + 1
    return {
        "wall_s": round(wall, 1),
        "graded": len(grades),
        "graded_per_hour": round(len(grades) / wall * 3600, 1),
        "statuses": statuses,
        "stage_s": {k: round(v, 1) for k, v in stage.items()},
        "stage_share": {k: round(v / total, 3) for k, v in stage.items()},
        "per_instance": {
            g.instance_id: {"status": g.status, **{k: round(v, 1) for k, v in g.timings.items()}}
            for g in grades
        },
    }


def synthetic(root: Path, n: int) -> tuple[list[Instance], str, SpecRegistry]:
    from tests.evals.conftest import make_project

    project = make_project(root / "synthetic", n=n)
    return load_instances(str(project.dataset)), project.mirror, project.registry()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset")
    ap.add_argument("--instances", default=None)
    ap.add_argument("--filter", default=None)
    ap.add_argument("--git-mirror", default=None)
    ap.add_argument("--synthetic", type=int, default=0, help="grade N synthetic instances")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "eval_throughput.json")
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    if args.synthetic:
        insts, mirror, specs = synthetic(work, args.synthetic)
        source = f"synthetic calc project x{args.synthetic}"
    else:
        every = load_instances(args.dataset)
        insts, unknown = select(every, Selection.parse(args.instances, args.filter))
        if unknown:
            raise SystemExit(f"unknown instances: {unknown}")
        mirror, specs, source = args.git_mirror, SpecRegistry(), args.dataset
    ca = HOST_CA if HOST_CA.is_file() else None
    results: dict[str, Any] = {
        "benchmark": "eval_throughput",
        "machine": describe(),
        "data": source,
        "instances": [i.instance_id for i in insts],
        "what": "gold patches graded with `harness eval grade` semantics (local executor)",
        "runs": {},
    }
    for workers in [int(w) for w in args.workers.split(",")]:
        for phase, rebuild in (("cold", True), ("warm", False)):
            config = EvalConfig(
                cache_dir=work / "cache",
                git_mirror=mirror,
                env=EnvOptions(ca_bundle=ca, rebuild=rebuild),
                specs=specs,
            )
            if phase == "cold":
                await warm_up(config, insts)
            out = work / f"w{workers}-{phase}"
            print(f"workers={workers} {phase} ...", flush=True)
            run = await grade_all(config, insts, workers, out)
            results["runs"][f"workers={workers} {phase}"] = run
            print(json.dumps({k: v for k, v in run.items() if k != "per_instance"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
