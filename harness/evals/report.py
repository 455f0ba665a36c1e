"""`harness eval report`: numbers from a run directory's records.

Resolved rate (the final patch), coverage (ANY graded candidate resolves the instance),
selection accuracy (resolved / covered), the scaling curve over the number of samples, and
tokens, cost and time per stage. Rendering (Markdown, PNG, HTML) lives in render.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import comb
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.evals.batch import GRADES, RUN_JSON, SOLVES
from harness.evals.records import (
    GradeResult,
    SolveRecord,
    read_grades,
    read_solves,
    unpriced_models,
)
from harness.llm.engine.spec_policy import SPEC_COUNTERS, SpecStats

STAGES = ("env_image", "checkout", "apply", "tests")


@dataclass(frozen=True)
class InstanceRow:
    instance_id: str
    status: str  # the final patch's grade status ("not graded" when none was recorded)
    samples: int  # trajectories (distinct candidates for solvers that do not say; else 1)
    resolving: int  # how many of them produced a patch that resolves it
    tokens: int = 0
    cost_usd: float | None = 0.0  # None: unknown (an API model without a price)
    solve_s: float = 0.0


@dataclass(frozen=True)
class ScalingPoint:
    samples: int
    coverage: float  # P(k random samples include one that resolves), averaged (pass@k)
    selected: float  # P(the most-voted patch of k random samples resolves), averaged


@dataclass(frozen=True)
class Sample:
    """One trajectory's outcome for the scaling curve: whether its patch resolves the
    instance and its patch's place in the vote ranking (None: no usable patch)."""

    resolves: bool
    rank: int | None


@dataclass(frozen=True)
class Report:
    title: str
    instances: tuple[InstanceRow, ...]
    statuses: dict[str, int]
    solve_statuses: dict[str, int]
    scaling: tuple[ScalingPoint, ...]
    stage_s: dict[str, float]  # total seconds per stage (solve + grading stages)
    tokens: int
    cost_usd: float  # of the solves whose cost is known
    meta: dict[str, Any] = field(default_factory=dict)
    speculation: dict[str, Any] | None = None  # draft/target counters summed over the solves
    unpriced: tuple[str, ...] = ()  # API models without a price: the total cost is unknown

    @property
    def total(self) -> int:
        return len(self.instances)

    @property
    def resolved(self) -> int:
        return sum(1 for r in self.instances if r.status == "resolved")

    @property
    def covered(self) -> int:
        return sum(1 for r in self.instances if r.resolving > 0)

    def rate(self, n: int) -> float:
        return n / self.total if self.total else 0.0

    @property
    def selection_accuracy(self) -> float | None:
        return self.resolved / self.covered if self.covered else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate that k of n samples (c correct) include a correct one."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def selected_at_k(samples: Sequence[Sample], k: int) -> float:
    """Exact expectation, over the C(n, k) subsets of k samples, that the best-ranked patch
    among them resolves (a subset with no patch picks nothing). Samples sharing a patch
    share its rank; a patch p is the pick when the subset holds one of its m samples and
    none of the b samples ranked above it: (C(n - b, k) - C(n - b - m, k)) / C(n, k)."""
    n = len(samples)
    if not n or k < 1:
        return 0.0
    k = min(k, n)
    ranked = sorted({s.rank for s in samples if s.rank is not None})
    total = 0.0
    above = 0
    for rank in ranked:
        mine = [s for s in samples if s.rank == rank]
        if mine[0].resolves:
            total += (comb(n - above, k) - comb(n - above - len(mine), k)) / comb(n, k)
        above += len(mine)
    return total


def scaling_curve(instances: Sequence[Sequence[Sample]]) -> tuple[ScalingPoint, ...]:
    """coverage@k and selected@k for k = 1..N (N = the most samples any instance has),
    each the exact average over every subset of k of an instance's n samples (the unbiased
    estimator, so the curve does not depend on the order samples finished in), then over
    instances; an instance with n < k counts with all n."""
    if not instances:
        return ()
    most = max((len(s) for s in instances), default=0)
    points = []
    for k in range(1, most + 1):
        cov = sel = 0.0
        for samples in instances:
            if not samples:
                continue
            n = len(samples)
            c = sum(1 for s in samples if s.resolves)
            cov += pass_at_k(n, c, min(k, n))
            sel += selected_at_k(samples, k)
        points.append(ScalingPoint(k, cov / len(instances), sel / len(instances)))
    return tuple(points)


def instance_samples(solve: SolveRecord | None, grades: Mapping[str, GradeResult]) -> list[Sample]:
    """The samples of one instance, in sampling order. `solve.samples` names the candidate
    each trajectory's patch is graded under ("" for none); records without it (other
    solvers, older runs) count each distinct candidate as one sample."""
    if solve is None or not solve.candidates:
        final = grades.get("final")
        return [Sample(final.resolved, 0)] if final is not None else []
    order = sorted(range(len(solve.candidates)), key=lambda i: (-solve.candidates[i].votes, i))
    rank = {solve.candidates[i].candidate_id: r for r, i in enumerate(order)}

    def sample(cand_id: str) -> Sample:
        graded = grades.get(cand_id)
        ok = graded is not None and graded.resolved
        return Sample(ok, rank.get(cand_id)) if cand_id else Sample(False, None)

    if solve.samples:
        return [sample(c) for c in solve.samples]
    return [sample(c.candidate_id) for c in solve.candidates]


def load_report(run_dir: Path) -> Report:
    """Build the report of a `harness eval run` or `harness eval grade` directory."""
    if not (run_dir / GRADES).exists() and not (run_dir / SOLVES).exists():
        raise ConfigError(
            f"{run_dir} has no {GRADES} or {SOLVES}",
            hint="pass the --out directory of `harness eval run` or `harness eval grade`",
        )
    meta: dict[str, Any] = {}
    if (run_dir / RUN_JSON).exists():
        try:
            meta = json.loads((run_dir / RUN_JSON).read_text())
        except json.JSONDecodeError:
            meta = {}
    grades = read_grades(run_dir / GRADES)
    solves = {s.instance_id: s for s in read_solves(run_dir / SOLVES)}
    return build_report(grades, solves, meta, title=str(meta.get("title") or run_dir.name))


def build_report(
    grades: Sequence[GradeResult],
    solves: dict[str, SolveRecord],
    meta: dict[str, Any],
    *,
    title: str = "",
) -> Report:
    by_instance: dict[str, dict[str, GradeResult]] = {}
    for g in grades:  # later records win: a re-graded candidate replaces the old grade
        by_instance.setdefault(g.instance_id, {})[g.candidate_id] = g
    ids = list(dict.fromkeys([*meta.get("instances", []), *by_instance, *solves]))
    rows: list[InstanceRow] = []
    samples: list[list[Sample]] = []
    stage_s: dict[str, float] = {}
    for g in grades:
        for stage, secs in g.timings.items():
            stage_s[stage] = stage_s.get(stage, 0.0) + secs
    for ident in ids:
        mine = by_instance.get(ident, {})
        final = mine.get("final")
        solve = solves.get(ident)
        cands = instance_samples(solve, mine)
        resolving = sum(1 for s in cands if s.resolves) or int(final is not None and final.resolved)
        samples.append(cands)
        rows.append(
            InstanceRow(
                ident,
                final.status if final else "not graded",
                samples=len(cands),
                resolving=resolving,
                tokens=solve.tokens if solve else 0,
                cost_usd=solve.cost_usd if solve else 0.0,
                solve_s=solve.duration_s if solve else 0.0,
            )
        )
    solve_s = sum(s.duration_s for s in solves.values())
    solve_stages: dict[str, float] = {}
    for s in solves.values():  # the pipeline's own split: context, samples, voting, selection
        for stage, secs in s.stage_s.items():
            solve_stages[f"solve: {stage}"] = solve_stages.get(f"solve: {stage}", 0.0) + secs
    stages = (
        {"solve": solve_s, **solve_stages, **{s: stage_s.get(s, 0.0) for s in STAGES}}
        if solves
        else {s: stage_s.get(s, 0.0) for s in STAGES}
    )
    return Report(
        title=title,
        instances=tuple(rows),
        statuses=dict(Counter(r.status for r in rows).most_common()),
        solve_statuses=dict(Counter(s.status for s in solves.values()).most_common()),
        scaling=scaling_curve(samples),
        stage_s=stages,
        tokens=sum(s.tokens for s in solves.values()),
        cost_usd=sum(s.cost_usd or 0.0 for s in solves.values()),
        meta=meta,
        speculation=speculation_totals(s.speculation for s in solves.values()),
        unpriced=unpriced_models(solves.values()),
    )


def speculation_totals(
    records: Iterable[Mapping[str, Any] | None],
) -> dict[str, Any] | None:
    """Counters summed over the solves that speculated, with the overall rates."""
    runs = [r for r in records if r]
    if not runs:
        return None
    modes = sorted({str(r.get("mode")) for r in runs})
    sums = {k: sum(int(r.get(k, 0)) for r in runs) for k in SPEC_COUNTERS}
    # The rates come from SpecStats itself (one definition for a run and for a batch).
    total = SpecStats("step" if "step" in modes else "token", **sums).to_json()
    del total["threshold"], total["alpha"]  # per engine, not summable: `alphas` lists them
    total["runs"] = len(runs)
    total["modes"] = modes
    total["alphas"] = sorted({r["alpha"] for r in runs if r.get("alpha") is not None})
    return total
