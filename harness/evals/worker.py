"""The unit of work an executor runs: solve one instance, or grade one patch.

Jobs and their config are plain frozen dataclasses, so the same code runs in this process
(local executor) or is pickled to a Ray worker on another node, which then builds its own
Worker: its own sandboxes, repository cache and environment images.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from harness.errors import HarnessError, RepoError, TaskError
from harness.evals.dataset import Instance
from harness.evals.envimages import EnvBuildFailed, EnvImages, EnvOptions
from harness.evals.grading import GradeOptions, GradeOutcome, Grader
from harness.evals.records import CandidateRecord, GradeResult, GradeStatus, SolveRecord
from harness.evals.repos import RepoCache
from harness.evals.specs import SpecRegistry
from harness.evals.tasks import instance_task
from harness.evals.toolgaps import tool_times
from harness.sandboxes import SandboxBackend, make_backend
from harness.types import Solver, SolveResult

SolverFactory = Callable[[], Solver]  # must pickle (a module-level callable) for Ray


@dataclass(frozen=True)
class EvalConfig:
    """Everything a worker needs besides the job; the same on every node."""

    cache_dir: Path
    git_mirror: str | None = None
    env: EnvOptions = field(default_factory=EnvOptions)
    grade: GradeOptions = field(default_factory=GradeOptions)
    specs: SpecRegistry = field(default_factory=SpecRegistry)
    backend: str = "docker"
    model: str = "harness"  # model_name_or_path written to predictions
    include_hints: bool = False


@dataclass(frozen=True)
class SolveJob:
    instance: Instance
    run_dir: Path  # the solver's directory for this instance


@dataclass(frozen=True)
class GradeJob:
    instance: Instance
    patch: str
    candidate_id: str = "final"
    model: str = ""
    run_empty: bool = False  # run the tests even when the patch is empty (validation)


@dataclass(frozen=True)
class PruneJob:
    """Remove the environment images of (repo, version) this worker built or used."""

    repo: str
    version: str


@dataclass(frozen=True)
class PruneOutcome:
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class SolveOutcome:
    record: SolveRecord
    failure: GradeResult | None = None  # why the instance cannot be graded, when it cannot


Job = SolveJob | GradeJob | PruneJob
JobResult = SolveOutcome | GradeOutcome | PruneOutcome


class Worker:
    """One process's sandboxes, caches and solver. Use as `async with`."""

    def __init__(self, config: EvalConfig, solver_factory: SolverFactory | None = None) -> None:
        self.config = config
        self._solver_factory = solver_factory
        self._solver: Solver | None = None
        self.repos = RepoCache(config.cache_dir, config.git_mirror)
        self.images = EnvImages(config.cache_dir, self.repos, config.env)
        self._backend: SandboxBackend | None = None

    async def __aenter__(self) -> Worker:
        self._backend = make_backend(self.config.backend, self.config.cache_dir)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._backend is not None:
            await self._backend.aclose()
        await self.images.aclose()
        if self._solver is not None:  # e.g. the pipeline's loaded model
            await self._solver.aclose()

    def grader(self) -> Grader:
        if self._backend is None:
            raise RuntimeError("use the Worker as `async with`")
        return Grader(self._backend, self.images, self.config.specs, self.repos, self.config.grade)

    async def run(self, job: Job) -> JobResult:
        """Run a job; failures become records, never exceptions (the batch goes on)."""
        if isinstance(job, SolveJob):
            return await self.solve(job)
        if isinstance(job, PruneJob):
            try:
                return PruneOutcome(tuple(await self.images.remove(job.repo, job.version)))
            except Exception as exc:  # the engine went away: say so, go on
                return PruneOutcome((f"nothing removed: {exc!r}"[:300],))
        try:
            return await self.grader().grade(
                job.instance,
                job.patch,
                candidate_id=job.candidate_id,
                model=job.model,
                run_empty=job.run_empty,
            )
        except Exception as exc:  # a bug or an unforeseen failure: record it, go on
            result = GradeResult(
                job.instance.instance_id,
                "error",
                candidate_id=job.candidate_id,
                model=job.model,
                message=f"grading crashed: {exc!r}",
            )
            return GradeOutcome(result, {"crash.txt": traceback.format_exc()})

    async def solve(self, job: SolveJob) -> SolveOutcome:
        inst = job.instance
        model = self.config.model

        def failed(status: GradeStatus, message: str) -> SolveOutcome:
            record = SolveRecord(inst.instance_id, "skipped", message=message, model=model)
            return SolveOutcome(record, GradeResult(inst.instance_id, status, message=message))

        try:
            task, _ = await instance_task(
                inst,
                repos=self.repos,
                images=self.images,
                specs=self.config.specs,
                include_hints=self.config.include_hints,
            )
        except RepoError as exc:
            return failed("repo_failed", exc.message)
        except EnvBuildFailed as exc:
            return failed("env_build_failed", exc.message)
        except TaskError as exc:  # the only one instance_task raises: no install spec
            return failed("no_spec", exc.message)
        except HarnessError as exc:
            return failed("error", exc.message)
        shutil.rmtree(job.run_dir, ignore_errors=True)  # a solve cut short by a kill
        job.run_dir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        try:
            if self._solver is None:
                if self._solver_factory is None:
                    raise RuntimeError("no solver was configured for this worker")
                self._solver = self._solver_factory()
            result = await self._solver.solve(task, job.run_dir)
        except Exception as exc:  # one instance failing never stops the batch
            (job.run_dir / "solve-crash.txt").write_text(traceback.format_exc())
            record = SolveRecord(
                inst.instance_id,
                "error",
                message=f"the solver crashed: {exc!r}",
                duration_s=time.monotonic() - start,
                run_dir=str(job.run_dir),
                model=model,
            )
            return SolveOutcome(record)
        duration = result.duration_s or (time.monotonic() - start)
        record = solve_record(inst.instance_id, result, model, duration)
        execs, gaps = tool_times(Path(result.run_dir))
        return SolveOutcome(
            replace(
                record,
                exec_s={k: tuple(v) for k, v in execs.items()},
                gap_s={k: tuple(v) for k, v in gaps.items()},
            )
        )


def solve_record(
    instance_id: str, result: SolveResult, model: str, duration_s: float
) -> SolveRecord:
    """A SolveResult flattened for solves.jsonl; its cost is null (unknown) when an API model
    without a price was called, never a made-up $0."""
    candidates = tuple(
        CandidateRecord(
            c.candidate.candidate_id,
            c.candidate.patch,
            votes=c.votes,
            selected=c.selected,
            source=c.candidate.source,
        )
        for c in result.candidates
    )
    return SolveRecord(
        instance_id,
        result.status,
        patch=result.patch,
        candidates=candidates,
        tokens=result.tokens,
        cost_usd=None if result.unpriced else result.cost_usd,
        duration_s=duration_s,
        message=result.message,
        run_dir=str(result.run_dir),
        model=model,
        stage_s=dict(result.stage_s),
        speculation=result.speculation,
        samples=tuple(result.samples),
        unpriced=result.unpriced,
    )
