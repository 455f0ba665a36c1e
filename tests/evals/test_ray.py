"""The Ray executor (a local Ray instance, 2 CPUs) gives the same records as the local one,
reusing its actors across jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evals.batch import GRADES, PREDICTIONS, Batch
from harness.evals.dataset import load_instances
from harness.evals.executors import Executor, LocalExecutor, RayExecutor
from harness.evals.predictions import read_predictions
from harness.evals.records import read_grades
from harness.evals.worker import EvalConfig
from tests.evals.conftest import env_options, make_project
from tests.evals.solvers import known_patch
from tests.sandboxes.conftest import skip_unless_available

pytestmark = pytest.mark.docker


async def test_ray_and_local_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skip_unless_available("docker")
    pytest.importorskip("ray")
    # Ray workers inherit the environment of the process that starts Ray: the solver
    # factory reads its sandbox cache from there, like the CLI's would.
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    project = make_project(tmp_path / "p", n=2)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    config = EvalConfig(
        cache_dir=tmp_path / "cache",
        git_mirror=project.mirror,
        env=env_options(),
        specs=project.registry(),
    )
    results = {}
    executors: dict[str, Executor] = {
        "local": LocalExecutor(config, known_patch),
        "ray": RayExecutor(config, known_patch, num_cpus=2),
    }
    for name, executor in executors.items():
        out = tmp_path / name
        async with executor:
            await Batch(out, executor, workers=2).run(insts, unknown=["nope-1"])
            if isinstance(executor, RayExecutor):
                # 2 solves and 8 grades on at most 2 actors: workers (and loaded models) are
                # reused across jobs, not rebuilt per job.
                assert 1 <= executor.actors_started <= 2 and executor.actors <= 2
        grades = {
            (g.instance_id, g.candidate_id): (g.status, g.fail_to_pass, g.pass_to_pass)
            for g in read_grades(out / GRADES)
        }
        preds = {p.instance_id: p.model_patch for p in read_predictions(out / PREDICTIONS)[0]}
        results[name] = (grades, preds)
    assert results["ray"] == results["local"]
    grades, _ = results["ray"]
    assert len(grades) == 2 * 4 + 1
    assert sorted(status for status, _, _ in grades.values()) == sorted(
        ["resolved"] * 6 + ["unresolved"] * 2 + ["unknown_instance"]
    )
    # the Ray workers wrote their logs back through the driver, into the run directory
    log = next((tmp_path / "ray" / "instances").glob("*/grade/*/eval.log"))
    assert "Start Test Output" in log.read_text()
