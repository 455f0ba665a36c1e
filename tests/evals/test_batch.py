"""The batch driver with the local executor: solve, grade every candidate, record, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.evals.batch import GRADES, PREDICTIONS, SOLVES, Batch, prepare_out_dir
from harness.evals.dataset import load_instances
from harness.evals.executors import LocalExecutor
from harness.evals.predictions import read_predictions
from harness.evals.records import read_grades, read_solves
from harness.evals.report import load_report
from harness.evals.worker import EvalConfig
from tests.evals.conftest import GOLD, NOT_APPLYING, env_options, make_project
from tests.evals.solvers import CALLS_LOG, CrashingSolver, KnownPatchSolver
from tests.sandboxes.conftest import skip_unless_available

pytestmark = pytest.mark.docker


def config_for(tmp_path: Path, mirror: str, registry: object) -> EvalConfig:
    return EvalConfig(
        cache_dir=tmp_path / "cache",
        git_mirror=mirror,
        env=env_options(),
        specs=registry,  # type: ignore[arg-type]
        model="test-model",
    )


async def test_run_grades_every_candidate_once_per_distinct_patch(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=2)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    config = config_for(tmp_path, project.mirror, project.registry())
    out = tmp_path / "run"
    seen: list[str] = []
    async with LocalExecutor(config, lambda: KnownPatchSolver(config.cache_dir)) as ex:
        batch = Batch(
            out, ex, workers=2, model="test-model", on_progress=lambda p: seen.append(p.last)
        )
        await batch.run(insts, unknown=["nope-1"])

    preds, bad = read_predictions(out / PREDICTIONS)
    assert not bad and sorted(p.instance_id for p in preds) == [i.instance_id for i in insts]
    assert all(
        p.model_name_or_path == "test-model" and "+    return a + b" in p.model_patch for p in preds
    )
    solves = read_solves(out / SOLVES)
    assert {s.status for s in solves} == {"patched"} and all(len(s.candidates) == 3 for s in solves)
    grades = {(g.instance_id, g.candidate_id): g for g in read_grades(out / GRADES)}
    assert grades[("nope-1", "final")].status == "unknown_instance"
    for inst in insts:
        mine = {c: grades[(inst.instance_id, c)] for c in ("final", "s0", "s1", "s2")}
        assert mine["final"].resolved and mine["s1"].resolved and mine["s2"].resolved
        assert mine["s0"].status == "unresolved"
        # s1, s2 and the final patch are one patch: graded once, recorded three times
        assert mine["final"].log_path == mine["s1"].log_path == mine["s2"].log_path
        folders = list((out / "instances" / inst.instance_id / "grade").iterdir())
        assert len(folders) == 2
        assert (out / mine["s0"].log_path).read_text().count("FAILED tests/test_calc.py") == 1
    assert "nope-1 unknown" in seen and any(s.endswith("resolved") for s in seen)

    report = load_report(out)
    assert (report.total, report.resolved, report.covered) == (3, 2, 2)
    assert report.selection_accuracy == 1.0
    assert report.tokens == 2000 and report.statuses == {"resolved": 2, "unknown_instance": 1}
    # This solver names no samples: each of its 3 candidates counts as one (2 resolve).
    # selected@1 = 2/3 per solved instance; at k = 3 the most-voted (right) one is picked.
    assert report.scaling[0].selected == pytest.approx(4 / 9)
    assert report.scaling[2].selected == report.scaling[2].coverage == pytest.approx(2 / 3)


async def test_resume_does_not_redo_finished_work(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=1)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    config = config_for(tmp_path, project.mirror, project.registry())
    out = tmp_path / "run"
    prepare_out_dir(out, resume=False, meta={"dataset": "x"})
    for _ in range(2):
        async with LocalExecutor(config, lambda: KnownPatchSolver(config.cache_dir)) as ex:
            await Batch(out, ex).run(insts)
    assert (out / CALLS_LOG).read_text().splitlines() == [insts[0].instance_id]
    assert len(read_grades(out / GRADES)) == 4 and len(read_solves(out / SOLVES)) == 1
    with pytest.raises(ConfigError, match="already holds results"):
        prepare_out_dir(out, resume=False, meta={})
    prepare_out_dir(out, resume=True, meta={})
    assert len(json.loads((out / "run.json").read_text())["resumed_at"]) == 1


async def test_a_crashing_solver_is_recorded_and_the_batch_goes_on(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=2)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    config = config_for(tmp_path, project.mirror, project.registry())
    out = tmp_path / "run"
    made: list[CrashingSolver] = []

    def factory() -> CrashingSolver:
        made.append(CrashingSolver())
        return made[-1]

    async with LocalExecutor(config, factory) as ex:
        await Batch(out, ex, workers=2).run(insts)
    assert [s.closed for s in made] == [1], "the worker builds one solver and closes it once"
    solves = read_solves(out / SOLVES)
    assert [s.status for s in solves] == ["error", "error"]
    assert all("boom on" in s.message for s in solves)
    assert all(
        (out / "instances" / s.instance_id / "solve" / "solve-crash.txt").exists() for s in solves
    )
    assert {g.status for g in read_grades(out / GRADES)} == {"empty_patch"}


async def test_grading_predictions_with_bad_input(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=3)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    ids = [i.instance_id for i in insts]
    preds_file = tmp_path / "preds.jsonl"
    preds_file.write_text(
        "\n".join(
            [
                json.dumps({"instance_id": ids[0], "model_name_or_path": "m", "model_patch": GOLD}),
                '{"instance_id": "torn',
                json.dumps({"instance_id": ids[1], "model_patch": NOT_APPLYING}),
                json.dumps({"instance_id": "ghost-1", "model_patch": GOLD}),
            ]
        )
    )
    preds, bad = read_predictions(preds_file)
    config = config_for(tmp_path, project.mirror, project.registry())
    out = tmp_path / "graded"
    async with LocalExecutor(config) as ex:
        await Batch(out, ex, workers=2).grade(insts, preds, bad)
    grades = {g.instance_id: g for g in read_grades(out / GRADES)}
    assert grades[ids[0]].status == "resolved" and grades[ids[0]].model == "m"
    assert grades[ids[1]].status == "patch_failed"
    assert grades["ghost-1"].status == "unknown_instance"
    assert grades["<line 2>"].status == "malformed_prediction"
    assert ids[2] not in grades  # no prediction, nothing graded


async def test_instances_that_cannot_be_set_up_are_skipped_not_solved(tmp_path: Path) -> None:
    skip_unless_available("docker")
    project = make_project(tmp_path / "p", n=1)
    good = project.records[0]
    records = [
        good,
        {**good, "instance_id": "harness-tests__calc-nospec", "version": "9.9"},
        {**good, "instance_id": "harness-tests__gone-1", "repo": "harness-tests/gone"},
    ]
    dataset = tmp_path / "mixed.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    insts = load_instances(str(dataset), cache_dir=tmp_path / "hf")
    registry = project.registry()
    spec = registry.get(good["repo"], good["version"])
    assert spec is not None
    registry.register("harness-tests/gone", good["version"], spec)  # a spec, but no repo
    config = config_for(tmp_path, project.mirror, registry)
    out = tmp_path / "run"
    async with LocalExecutor(config, lambda: KnownPatchSolver(config.cache_dir)) as ex:
        await Batch(out, ex, workers=3).run(insts)
    solves = {s.instance_id: s for s in read_solves(out / SOLVES)}
    assert solves["harness-tests__calc-nospec"].status == "skipped"
    assert solves["harness-tests__gone-1"].status == "skipped"
    finals = {g.instance_id: g for g in read_grades(out / GRADES) if g.candidate_id == "final"}
    assert finals["harness-tests__calc-nospec"].status == "no_spec"
    assert finals["harness-tests__gone-1"].status == "repo_failed"
    assert "no mirror of harness-tests/gone" in finals["harness-tests__gone-1"].message
    assert finals[good["instance_id"]].status == "resolved"  # the batch went on
    # the solver ran only where there was something to solve; no prediction for the others
    assert (out / CALLS_LOG).read_text().split() == [good["instance_id"]]
    assert [p.instance_id for p in read_predictions(out / PREDICTIONS)[0]] == [good["instance_id"]]
