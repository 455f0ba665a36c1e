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
    samples: int  # graded candidates (the final patch counts as one when there are none)
    resolving: int  # how many of them resolve it
    tokens: int = 0
    cost_usd: float | None = 0.0  # None: unknown (an API model without a price)
    solve_s: float = 0.0


@dataclass(frozen=True)
class ScalingPoint:
    samples: int
    coverage: float  # P(at least one of k random samples resolves), averaged (pass@k)
    voted: float  # resolved rate when the most-voted of the first k samples is picked


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


def scaling_curve(samples: Sequence[Sequence[tuple[bool, int]]]) -> tuple[ScalingPoint, ...]:
    """samples[i] = (resolves, votes) of instance i's candidates in sampling order."""
    if not samples:
        return ()
    most = max((len(s) for s in samples), default=0)
    points = []
    for k in range(1, most + 1):
        cov = vote = 0.0
        for cands in samples:
            if not cands:
                continue
            n = len(cands)
            c = sum(1 for ok, _ in cands if ok)
            cov += pass_at_k(n, c, min(k, n))
            prefix = cands[: min(k, n)]
            best = max(range(len(prefix)), key=lambda j: (prefix[j][1], -j))
            vote += 1.0 if prefix[best][0] else 0.0
        points.append(ScalingPoint(k, cov / len(samples), vote / len(samples)))
    return tuple(points)


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
    samples: list[list[tuple[bool, int]]] = []
    stage_s: dict[str, float] = {}
    for g in grades:
        for stage, secs in g.timings.items():
            stage_s[stage] = stage_s.get(stage, 0.0) + secs
    for ident in ids:
        mine = by_instance.get(ident, {})
        final = mine.get("final")
        solve = solves.get(ident)
        cands: list[tuple[bool, int]] = []
        if solve is not None and solve.candidates:
            for c in solve.candidates:
                graded = mine.get(c.candidate_id)
                cands.append((graded is not None and graded.resolved, c.votes))
        elif final is not None:
            cands.append((final.resolved, 0))
        resolving = sum(1 for ok, _ in cands if ok) or int(final is not None and final.resolved)
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
