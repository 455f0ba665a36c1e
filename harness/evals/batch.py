"""The batch driver of `harness eval run` and `harness eval grade`.

It owns the output directory: records are appended as jobs finish (predictions, solves,
grades), logs are written under instances/<id>/, and a resumed batch skips whatever is
already recorded. Up to `workers` instances are in flight; each is solved, then every
distinct patch it produced (the final one and each candidate) is graded.

    OUT/run.json            what was asked (data set, selection, options)
    OUT/predictions.jsonl   official format (run only)
    OUT/solves.jsonl        one SolveRecord per instance (run only)
    OUT/grades.jsonl        one GradeResult per (instance, candidate)
    OUT/instances/<id>/solve/           the solver's run directory
    OUT/instances/<id>/grade/<sha>/     eval.log, patch.diff, report.json, env_build.log
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.evals.dataset import Instance
from harness.evals.executors import Executor
from harness.evals.grading import GradeOutcome
from harness.evals.predictions import BadPrediction, Prediction
from harness.evals.records import (
    GradeResult,
    SolveRecord,
    patch_sha,
    read_grades,
    read_solves,
    unpriced_models,
)
from harness.evals.worker import GradeJob, JobResult, SolveJob, SolveOutcome
from harness.store import append_jsonl

PREDICTIONS = "predictions.jsonl"
SOLVES = "solves.jsonl"
GRADES = "grades.jsonl"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class Progress:
    """Where a batch stands; sent after every solve and every finished instance."""

    total: int
    done: int
    resolved: int
    covered: int
    tokens: int
    cost_usd: float  # of the solves whose cost is known
    last: str = ""  # what just happened, e.g. "django__django-11099 resolved"
    unpriced: tuple[str, ...] = ()  # API models without a price: the total cost is unknown


ProgressCallback = Callable[[Progress], None]


def prepare_out_dir(out: Path, *, resume: bool, meta: Mapping[str, Any]) -> None:
    """Create OUT (refusing to mix with old results unless resuming) and write run.json."""
    has_results = any((out / name).exists() for name in (GRADES, SOLVES, PREDICTIONS))
    if has_results and not resume:
        raise ConfigError(
            f"{out} already holds results",
            hint=f"pass --resume {out} to continue that batch, or choose another --out",
        )
    out.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if (out / RUN_JSON).exists():
        try:
            previous = json.loads((out / RUN_JSON).read_text())
        except json.JSONDecodeError:
            previous = {}
    data = {**previous, **meta}
    data["started_at"] = previous.get("started_at", time.time())
    if resume and previous:
        data["resumed_at"] = [*previous.get("resumed_at", []), time.time()]
    (out / RUN_JSON).write_text(json.dumps(data, indent=1, default=str))


class Batch:
    """Drives jobs through an executor and records what they return."""

    def __init__(
        self,
        out: Path,
        executor: Executor,
        *,
        workers: int = 1,
        model: str = "harness",
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        self.out = out
        self.executor = executor
        self.model = model
        self._slots = asyncio.Semaphore(workers)
        self._on_progress = on_progress or (lambda _: None)
        self._grades: dict[tuple[str, str], GradeResult] = {
            (g.instance_id, g.candidate_id): g for g in read_grades(out / GRADES)
        }
        self._solves: dict[str, SolveRecord] = {s.instance_id: s for s in read_solves(out / SOLVES)}
        self._total = 0
        self._done = 0

    # ---- entry points -------------------------------------------------------------------

    async def run(self, instances: Sequence[Instance], unknown: Sequence[str] = ()) -> None:
        """Solve and grade every instance (`harness eval run`)."""
        self._total = len(instances) + len(unknown)
        self._record_unknown(unknown)
        await asyncio.gather(*(self._solve_and_grade(inst) for inst in instances))

    async def grade(
        self,
        instances: Sequence[Instance],
        predictions: Sequence[Prediction],
        bad: Sequence[BadPrediction] = (),
        unknown: Sequence[str] = (),
    ) -> None:
        """Grade given patches (`harness eval grade`); ids the data set lacks are recorded."""
        by_id = {i.instance_id: i for i in instances}
        known = [p for p in predictions if p.instance_id in by_id]
        missing = [p.instance_id for p in predictions if p.instance_id not in by_id]
        self._total = len(known) + len(missing) + len(unknown) + len(bad)
        self._record_unknown([*unknown, *missing])
        for n, b in enumerate(bad):
            key = (b.instance_id or f"<{b.where}>", "final")
            if key not in self._grades:
                msg = f"{b.where}: {b.reason}"
                self._record_grade(GradeResult(key[0], "malformed_prediction", message=msg))
            self._finish(f"{key[0]} malformed ({n + 1}/{len(bad)})")
        await asyncio.gather(*(self._grade_one(by_id[p.instance_id], p) for p in known))

    # ---- per instance -------------------------------------------------------------------

    async def _solve_and_grade(self, inst: Instance) -> None:
        async with self._slots:
            record = self._solves.get(inst.instance_id)
            if record is None:
                run_dir = self.out / "instances" / inst.instance_id / "solve"
                outcome = await self._job(SolveJob(inst, run_dir), inst)
                if not isinstance(outcome, SolveOutcome):
                    raise TypeError(f"a solve job returned {type(outcome).__name__}")
                record = outcome.record
                if outcome.failure is not None:
                    self._record_grade(outcome.failure)
                self._record_solve(record)  # last: the marker that the instance is solved
            await self._grade_candidates(inst, record)
        self._finish(f"{inst.instance_id} {self._final_status(inst.instance_id)}")

    async def _grade_candidates(self, inst: Instance, record: SolveRecord) -> None:
        patches: dict[str, str] = {"final": record.patch}
        patches.update({c.candidate_id: c.patch for c in record.candidates})
        graded: dict[str, GradeResult] = {}  # patch sha -> grade, so duplicates run once
        for cand_id, patch in patches.items():
            if (inst.instance_id, cand_id) in self._grades:
                continue
            sha = patch_sha(patch)
            if sha in graded:
                self._record_grade(graded[sha].relabel(cand_id))
                continue
            job = GradeJob(inst, patch, cand_id, self.model)
            outcome = await self._job(job, inst)
            if not isinstance(outcome, GradeOutcome):
                raise TypeError(f"a grade job returned {type(outcome).__name__}")
            result = self._save_files(inst, outcome)
            self._record_grade(result)
            if sha:
                graded[sha] = result

    async def _grade_one(self, inst: Instance, pred: Prediction) -> None:
        async with self._slots:
            if (inst.instance_id, "final") not in self._grades:
                job = GradeJob(inst, pred.model_patch, "final", pred.model_name_or_path)
                outcome = await self._job(job, inst)
                if not isinstance(outcome, GradeOutcome):
                    raise TypeError(f"a grade job returned {type(outcome).__name__}")
                self._record_grade(self._save_files(inst, outcome))
        self._finish(f"{inst.instance_id} {self._final_status(inst.instance_id)}")

    async def _job(self, job: SolveJob | GradeJob, inst: Instance) -> JobResult:
        try:
            return await self.executor.run(job)
        except Exception as exc:  # the executor itself failed (a Ray node died, ...)
            message = f"{self.executor.name} executor failed: {exc!r}"[:2000]
            if isinstance(job, SolveJob):
                record = SolveRecord(inst.instance_id, "error", message=message, model=self.model)
                return SolveOutcome(record)
            return GradeOutcome(
                GradeResult(
                    inst.instance_id,
                    "error",
                    candidate_id=job.candidate_id,
                    model=job.model,
                    message=message,
                )
            )

    # ---- records ------------------------------------------------------------------------

    def _save_files(self, inst: Instance, outcome: GradeOutcome) -> GradeResult:
        result = outcome.result
        if not outcome.files:
            return result
        name = result.patch_sha or result.candidate_id
        folder = self.out / "instances" / inst.instance_id / "grade" / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, text in outcome.files.items():
            (folder / fname).write_text(text)
        main = "eval.log" if "eval.log" in outcome.files else next(iter(outcome.files))
        rel = str((folder / main).relative_to(self.out))
        return GradeResult(**{**result.__dict__, "log_path": rel})

    def _record_solve(self, record: SolveRecord) -> None:
        self._solves[record.instance_id] = record
        append_jsonl(self.out / SOLVES, record.to_json())
        if record.status != "skipped":
            pred = {
                "instance_id": record.instance_id,
                "model_name_or_path": record.model,
                "model_patch": record.patch,
            }
            append_jsonl(self.out / PREDICTIONS, pred)
        self._emit(f"{record.instance_id} solved ({record.status})")

    def _record_grade(self, result: GradeResult) -> None:
        self._grades[(result.instance_id, result.candidate_id)] = result
        append_jsonl(self.out / GRADES, result.to_json())

    def _record_unknown(self, ids: Sequence[str]) -> None:
        for ident in ids:
            if (ident, "final") not in self._grades:
                msg = "not in the data set"
                self._record_grade(GradeResult(ident, "unknown_instance", message=msg))
            self._finish(f"{ident} unknown")

    def _final_status(self, instance_id: str) -> str:
        found = self._grades.get((instance_id, "final"))
        return found.status if found else "not graded"

    def _finish(self, last: str) -> None:
        self._done += 1
        self._emit(last)

    def _emit(self, last: str) -> None:
        resolved = sum(1 for (_, c), g in self._grades.items() if c == "final" and g.resolved)
        covered = len({i for (i, _), g in self._grades.items() if g.resolved})
        tokens = sum(s.tokens for s in self._solves.values())
        cost = sum(s.cost_usd or 0.0 for s in self._solves.values())
        unpriced = unpriced_models(self._solves.values())
        self._on_progress(
            Progress(self._total, self._done, resolved, covered, tokens, cost, last, unpriced)
        )
