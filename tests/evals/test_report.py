"""Report numbers (coverage, selection accuracy, scaling) and the rendered files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.evals.batch import GRADES, RUN_JSON, SOLVES
from harness.evals.records import CandidateRecord, GradeResult, SolveRecord
from harness.evals.render import write_report
from harness.evals.report import Sample, load_report, pass_at_k, scaling_curve, selected_at_k
from harness.store import append_jsonl, read_jsonl


def test_pass_at_k() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 2, 3) == 1.0  # any 3 of 4 include one of the 2 good ones


def test_scaling_curve_averages_over_every_subset_of_samples() -> None:
    # a: the resolving sample is second and its patch has the most votes; b: none resolves
    a = [Sample(False, 1), Sample(True, 0)]
    b = [Sample(False, 0), Sample(False, None)]
    curve = scaling_curve([a, b])
    assert [(p.samples, p.coverage, p.selected) for p in curve] == [
        (1, 0.25, 0.25),
        (2, 0.5, 0.5),
    ]


def test_selected_at_k_is_the_exact_expectation_over_subsets() -> None:
    from itertools import combinations

    # Two samples share the rank-1 patch; the last one left no patch (never picked).
    samples = [Sample(False, 2), Sample(True, 1), Sample(False, 0), Sample(True, 1)]
    samples.append(Sample(False, None))
    for k in range(1, 6):
        subsets = list(combinations(samples, k))
        picked = 0
        for sub in subsets:
            ranks = [(s.rank, s.resolves) for s in sub if s.rank is not None]
            picked += bool(ranks) and min(ranks)[1]
        assert selected_at_k(samples, k) == pytest.approx(picked / len(subsets))


def test_the_curve_follows_samples_not_the_ranked_candidate_list(tmp_path: Path) -> None:
    # Issue 14.6: four samples, sample-00 wrong, 01-03 the same right patch (one candidate,
    # ranked first by votes). The candidate list has two entries; the samples are four.
    run = tmp_path / "run"
    run.mkdir()
    cands = (
        CandidateRecord("sample-01", "right", votes=3, selected=True),
        CandidateRecord("sample-00", "wrong", votes=0),
    )
    samples = ("sample-00", "sample-01", "sample-01", "sample-01")
    record = SolveRecord("a", "patched", "right", cands, samples=samples)
    append_jsonl(run / SOLVES, record.to_json())
    for cand, ok in (("final", True), ("sample-01", True), ("sample-00", False)):
        status = "resolved" if ok else "unresolved"
        append_jsonl(run / GRADES, GradeResult("a", status, cand).to_json())
    report = load_report(run)
    assert [p.samples for p in report.scaling] == [1, 2, 3, 4]
    assert [p.coverage for p in report.scaling] == pytest.approx([0.75, 1, 1, 1])
    assert [p.selected for p in report.scaling] == pytest.approx([0.75, 1, 1, 1])
    assert report.instances[0].samples == 4 and report.instances[0].resolving == 3
    # A trajectory that left no patch counts as a sample that does not resolve.
    dropped = SolveRecord("a", "patched", "right", cands, samples=("", *samples[1:]))
    append_jsonl(run / SOLVES, dropped.to_json())
    report = load_report(run)
    assert [p.coverage for p in report.scaling][:2] == pytest.approx([0.75, 1])
    assert report.scaling[0].selected == pytest.approx(0.75)


def write_run(run: Path) -> None:
    run.mkdir()
    (run / RUN_JSON).write_text(json.dumps({"dataset": "d.jsonl", "instances": ["a", "b", "c"]}))
    cands = (CandidateRecord("s0", "p0", votes=1), CandidateRecord("s1", "p1", votes=4))
    for ident, final_ok, s1_ok in (("a", True, True), ("b", False, True)):
        solve = SolveRecord(ident, "patched", "p1", cands, tokens=100, cost_usd=0.5, duration_s=60)
        append_jsonl(run / SOLVES, solve.to_json())
        for cand, ok in (("final", final_ok), ("s0", False), ("s1", s1_ok)):
            status = "resolved" if ok else "unresolved"
            timings = {"tests": 10.0, "checkout": 1.0}
            append_jsonl(run / GRADES, GradeResult(ident, status, cand, timings=timings).to_json())
    # c: never solved (the run was cut short): it counts, as not graded


def test_report_from_records_and_rendered_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run)
    report = load_report(run)
    assert (report.total, report.resolved, report.covered) == (3, 1, 2)
    assert report.selection_accuracy == 0.5
    assert report.statuses == {"resolved": 1, "unresolved": 1, "not graded": 1}
    assert report.tokens == 200 and report.cost_usd == 1.0
    assert report.stage_s["solve"] == 120 and report.stage_s["tests"] == 60
    assert [p.coverage for p in report.scaling] == pytest.approx([1 / 3, 2 / 3])
    paths = write_report(report, run)
    md = paths["markdown"].read_text()
    assert (
        "**resolved: 1 (33.3%)**" in md and "selection accuracy (resolved / covered): 50.0%" in md
    )
    assert "| 2 | 66.7% | 66.7% |" in md  # the scaling table
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page
    assert page.count("<ul>") == 1 and "<b>resolved: 1 (33.3%)</b>" in page
    assert "<code>d.jsonl</code>" in page
    for name in ("scaling.png", "statuses.png", "stages.png"):
        assert (run / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_torn_lines_are_skipped_and_the_next_append_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as fh:
        fh.write('{"b": ')  # a writer killed mid-line
    append_jsonl(path, {"c": 3})
    assert list(read_jsonl(path)) == [{"a": 1}, {"c": 3}]


def test_report_needs_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no grades\.jsonl"):
        load_report(tmp_path)


def test_speculation_counters_add_up_over_the_solves(tmp_path: Path) -> None:
    from harness.llm.engine.spec_policy import SpecStats

    run = tmp_path / "run"
    run.mkdir()
    step = SpecStats(
        "step",
        rounds=4,
        drafted=8,
        accepted=6,
        draft_tokens=90,
        target_tokens=10,
        steps_scored=20,
        steps_accepted=16,
        steps_rejected=4,
        alpha=0.2,
    )
    stats = {"a": step.to_json(), "b": step.to_json(), "c": None}  # c ran without a draft
    for ident, spec in stats.items():
        record = SolveRecord(ident, "no_patch", speculation=spec)
        append_jsonl(run / SOLVES, record.to_json())
    (run / GRADES).write_text("")
    report = load_report(run)
    spec = report.speculation
    assert spec is not None and spec["runs"] == 2 and spec["alphas"] == [0.2]
    assert (spec["draft_tokens"], spec["steps_scored"], spec["steps_rejected"]) == (180, 40, 8)
    assert spec["draft_share"] == 0.9 and spec["rejection_rate"] == 0.2
    assert spec["acceptance_rate"] == 0.75
    md = write_report(report, run)["markdown"].read_text()
    assert "## Draft/target decoding" in md and "(realized rate 0.200; alpha 0.2)" in md
    assert "180 by the draft, 20 by the target (90.0% drafted)" in md


def test_an_unpriced_api_model_is_recorded_and_reported_as_unknown_cost(tmp_path: Path) -> None:
    from harness.evals.worker import solve_record
    from harness.types import SolveResult

    unpriced = SolveResult("a", "no_patch", "", tmp_path, tokens=50, unpriced=("gpt-mystery",))
    record = solve_record("a", unpriced, "openai:gpt-mystery", 3.0)
    assert record.cost_usd is None and record.unpriced == ("gpt-mystery",)
    line = json.loads(json.dumps(record.to_json()))  # as solves.jsonl holds it
    assert line["cost_usd"] is None and SolveRecord.from_json(line) == record
    priced = solve_record("b", SolveResult("b", "no_patch", "", tmp_path, cost_usd=0.5), "m", 1)
    assert priced.cost_usd == 0.5 and SolveRecord.from_json(priced.to_json()) == priced

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_JSON).write_text(json.dumps({"dataset": "d.jsonl", "instances": ["a", "b"]}))
    for rec in (record, priced):
        append_jsonl(run / SOLVES, rec.to_json())
        append_jsonl(run / GRADES, GradeResult(rec.instance_id, "unresolved", "final").to_json())
    report = load_report(run)
    assert report.unpriced == ("gpt-mystery",) and report.cost_usd == 0.5
    assert [i.cost_usd for i in report.instances] == [None, 0.5]
    md = write_report(report, run)["markdown"].read_text()
    assert "cost: $0.50 plus unknown (no price for gpt-mystery)" in md
    assert "| a | unresolved | 0 / 1 | 50 | unknown |" in md
