"""Parallel x serial sampling: N trajectories at once, each testing then editing, with voting
filling in as candidates appear (no stage barrier), then the selection loop.

Every step is persisted in the run directory (`RunStore`) as it happens; a run started again
on the same directory continues it without redoing finished work. One trajectory failing never
stops the others; an exhausted budget stops new model calls and the run ends with what exists.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.agent.context import ContextFinder, ContextResult, pack
from harness.agent.editing import EditingOutcome, restored_editing, run_editing
from harness.agent.repro import ReproRunner
from harness.agent.testing import TestingOutcome, restored_outcome, run_testing
from harness.agent.trajectory import Conversation, Observer, TrajectoryLog
from harness.config import SolveConfig
from harness.errors import BudgetExceeded, HarnessError
from harness.llm.base import LLM, Sampling
from harness.report import RunSummary, SampleSummary, render_report
from harness.runstore import RunStore
from harness.sandboxes import Limits, Sandbox, SandboxBackend, SandboxSpec
from harness.selectors.selection_loop import Selection, select, touched_files
from harness.selectors.voting import Matrix, Voting, patch_key
from harness.types import Candidate, CandidateResult, SolveResult, SolveStatus, Task

if TYPE_CHECKING:
    from harness.llm.engine.spec_policy import SpecStats


@dataclass
class SampleResult:
    """One trajectory's outcome, filled in as it goes."""

    sample_id: str
    status: str  # "finished" | "budget" | "error"
    candidate: Candidate | None = None
    testing: TestingOutcome | None = None
    editing: EditingOutcome | None = None
    message: str = ""
    started: float = 0.0
    test_ready: float = 0.0
    finished: float = 0.0

    def summary(self) -> SampleSummary:
        return SampleSummary(
            self.sample_id,
            self.status,
            self.message,
            testing_turns=self.testing.turns if self.testing else 0,
            reproduced=self.testing.reproduced if self.testing else False,
            editing_turns=self.editing.turns if self.editing else 0,
            editing_reason=self.editing.reason if self.editing else None,
            seconds=self.finished - self.started,
            testing_seconds=max(self.test_ready - self.started, 0.0),
        )


@dataclass
class Timings:
    start: float = field(default_factory=time.time)
    stages: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, since: float) -> float:
        now = time.time()
        self.stages[name] = round(self.stages.get(name, 0.0) + now - since, 3)
        return now


class Orchestrator:
    """Solves one task. Dependencies come in: the model, the sandbox backend, an observer.

    `usage` reports the tokens and dollars spent so far; `unpriced` names the API models
    whose calls have no known price (the report then says the cost is unknown)."""

    def __init__(
        self,
        config: SolveConfig,
        llm: LLM,
        backend: SandboxBackend,
        *,
        observer: Observer | None = None,
        extra_candidates: list[Candidate] | None = None,
        usage: Callable[[], tuple[int, float]] | None = None,
        context_llm: LLM | None = None,
        unpriced: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.llm = llm
        self.context_llm = context_llm or llm  # a cheaper model may judge relevance
        self.backend = backend
        self.observer = observer
        self.extra_candidates = extra_candidates or []
        self.usage = usage or (lambda: (0, 0.0))
        self.unpriced = tuple(unpriced)

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        store = RunStore(run_dir)
        if not store.exists():
            store.create(task, self.config)
        timings = Timings()
        spec_before = self.llm.speculation_stats()
        cfg = self.config
        self._emit("run", {"kind": "stage", "stage": "sandbox"})
        pristine = await self.backend.open(self._sandbox_spec(task))
        runner = ReproRunner(
            pristine,
            timeout=cfg.testing.exec_timeout,  # also voting's: it runs the samples' scripts
            output_limit=cfg.output_limit,
            limit=asyncio.Semaphore(cfg.concurrency.execs),
            python_path=cfg.sandbox.python_path,
        )
        async with pristine, runner:
            since = time.time()
            context = await self._context(task, pristine, store)
            since = timings.mark("context", since)
            async with Voting(runner, store.votes_log) as voting:
                for candidate in self.extra_candidates:
                    voting.add_candidate(candidate)
                samples = await self._samples(task, pristine, runner, context, voting, store)
                since = timings.mark("samples", since)
                matrix = await voting.wait()
            since = timings.mark("voting_tail", since)
            selection = await self._select(
                task, pristine, runner.with_timeout(cfg.selection.exec_timeout), matrix, store
            )
            timings.mark("selection", since)
        spec_after = self.llm.speculation_stats()
        speculation = spec_after.since(spec_before) if spec_after is not None else None
        return self._finish(task, store, samples, matrix, selection, timings, speculation)

    def _sandbox_spec(self, task: Task) -> SandboxSpec:
        sandbox = self.config.sandbox
        return SandboxSpec(
            repo=Path(task.repo),
            commit=task.base_commit,
            image=task.image or sandbox.image,
            workdir=task.workdir,
            network=sandbox.network,
            limits=Limits(
                cpus=sandbox.cpus,
                memory_mb=sandbox.memory_mb,
                pids=sandbox.pids,
                disk_mb=sandbox.disk_mb,
            ),
            ca_bundle=sandbox.ca_bundle,
        )

    async def _context(self, task: Task, pristine: Sandbox, store: RunStore) -> str:
        known = store.context_text()
        if known is not None:
            return known
        self._emit("run", {"kind": "stage", "stage": "context"})
        if not self.config.context.enabled:
            result = ContextResult((), "")
        else:
            finder = ContextFinder(
                self.context_llm, self.config.context, store.context_log, program_id=task.task_id
            )
            try:
                result = await finder.find(pristine, task.issue)
            except BudgetExceeded as exc:
                self._emit("run", {"kind": "budget", "message": str(exc)})
                result = ContextResult((), pack((), 0))
        store.save_context(result)
        return result.text

    # Samples -------------------------------------------------------------------------------
    async def _samples(
        self,
        task: Task,
        pristine: Sandbox,
        runner: ReproRunner,
        context: str,
        voting: Voting,
        store: RunStore,
    ) -> list[SampleResult]:
        """Every sample, at most `concurrency.samples` at once; each one's outcome is
        collected (an exception ends that sample as `error`), and its candidate joins voting
        as soon as it is there."""
        slots = asyncio.Semaphore(self.config.concurrency.samples or self.config.samples)

        async def one(index: int) -> SampleResult:
            async with slots:
                try:
                    result = await self._sample(index, task, pristine, runner, context, store)
                except Exception as exc:  # escaped the sample's own handling (closing its box)
                    result = self._failed_sample(index, exc, store)
            if result.candidate is not None:
                await self._vote_on(result, result.candidate, voting, store)
            return result

        # A TaskGroup awaits every sample, also when the run is cancelled.
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(one(i)) for i in range(self.config.samples)]
        return [job.result() for job in running]

    async def _vote_on(
        self, result: SampleResult, candidate: Candidate, voting: Voting, store: RunStore
    ) -> None:
        """Voting starts on this sample's test and candidate now, while other samples run."""
        try:
            await voting.add_test(result.sample_id, candidate.test)
        except Exception as exc:  # its run on the original code broke: the patch still runs
            message = f"its test could not run on the original code: {type(exc).__name__}: {exc}"
            log = TrajectoryLog.open(store.trajectory_log(result.sample_id), result.sample_id)
            log.record("error", "voting", message=message, traceback=traceback.format_exc())
            result.status, result.message = "error", message
        voting.add_candidate(candidate)

    async def _sample(
        self,
        index: int,
        task: Task,
        pristine: Sandbox,
        runner: ReproRunner,
        context: str,
        store: RunStore,
    ) -> SampleResult:
        sample_id = f"sample-{index:02d}"
        log = TrajectoryLog.open(store.trajectory_log(sample_id), sample_id, self.observer)
        result = SampleResult(sample_id, "finished", started=time.time())
        box: Sandbox | None = None
        try:
            testing = await self._testing(index, log, task, runner, context, pristine.workdir)
            result.testing, result.test_ready = testing, time.time()
            if "editing" in log.outcomes:
                editing = restored_editing(log.outcomes["editing"])
            else:
                box = await pristine.fork()
                editing = await self._editing(index, log, task, runner, context, box, testing)
            result.editing = editing
            if editing.test is not None and editing.original is not None:
                runner.remember_original(editing.test, editing.original)
            result.candidate = Candidate(sample_id, editing.patch, editing.test, sample_id)
        except BudgetExceeded as exc:
            result.status, result.message = "budget", str(exc)
            if box is not None:  # keep the work done so far as this sample's candidate
                test = result.testing.test if result.testing else None
                result.candidate = Candidate(sample_id, await box.diff(), test, sample_id)
        except HarnessError as exc:
            result.status, result.message = "error", str(exc)
            log.record("error", "sample", message=str(exc), traceback=traceback.format_exc())
        except Exception as exc:  # a bug anywhere in one trajectory must not hide it
            result.status, result.message = "error", f"{type(exc).__name__}: {exc}"
            log.record("error", "sample", message=result.message, traceback=traceback.format_exc())
        finally:
            if box is not None:
                await box.close()
        result.finished = time.time()
        self._emit(sample_id, {"kind": "stage", "stage": result.status})
        return result

    async def _testing(
        self,
        index: int,
        log: TrajectoryLog,
        task: Task,
        runner: ReproRunner,
        context: str,
        workdir: str,
    ) -> TestingOutcome:
        """The testing stage of sample `index` (or its outcome, when a run before finished it)."""
        if "testing" in log.outcomes:
            testing = restored_outcome(log.outcomes["testing"])
        else:
            self._emit(log.sample_id, {"kind": "stage", "stage": "testing"})
            conv = self._conversation(log, "testing", task, seed_offset=index)
            stage_runner = runner.with_timeout(self.config.testing.exec_timeout)
            testing = await run_testing(conv, stage_runner, task, context, workdir)
        if testing.test is not None and testing.original is not None:
            runner.remember_original(testing.test, testing.original)
        return testing

    async def _editing(
        self,
        index: int,
        log: TrajectoryLog,
        task: Task,
        runner: ReproRunner,
        context: str,
        box: Sandbox,
        testing: TestingOutcome,
    ) -> EditingOutcome:
        """The editing stage of sample `index` in `box`, seeded with its testing outcome."""
        self._emit(log.sample_id, {"kind": "stage", "stage": "editing"})
        conv = self._conversation(log, "editing", task, seed_offset=1000 + index)
        stage_runner = runner.with_timeout(self.config.editing.exec_timeout)
        return await run_editing(
            conv, stage_runner, box, task, context, testing.test, testing.original
        )

    def _conversation(
        self, log: TrajectoryLog, stage: str, task: Task, *, seed_offset: int
    ) -> Conversation:
        cfg = self.config.testing if stage == "testing" else self.config.editing
        return Conversation(
            self.llm,
            log,
            stage,
            f"{task.task_id}:{log.sample_id}",
            Sampling(
                cfg.temperature, max_tokens=cfg.max_tokens, seed=self.config.seed + seed_offset
            ),
            max_turns=cfg.max_turns,
        )

    def _failed_sample(self, index: int, exc: Exception, store: RunStore) -> SampleResult:
        sample_id = f"sample-{index:02d}"
        message = f"{type(exc).__name__}: {exc}"
        log = TrajectoryLog.open(store.trajectory_log(sample_id), sample_id)
        log.record("error", "sample", message=message, traceback=traceback.format_exc())
        now = time.time()
        self._emit(sample_id, {"kind": "stage", "stage": "error"})
        return SampleResult(sample_id, "error", message=message, started=now, finished=now)

    # Selection -----------------------------------------------------------------------------
    async def _select(
        self, task: Task, pristine: Sandbox, runner: ReproRunner, matrix: Matrix, store: RunStore
    ) -> Selection | None:
        ranked = matrix.ranked()[: self.config.selection.top_k]
        if not ranked:
            return None
        votes = {c.candidate_id: matrix.votes(c.candidate_id) for c in ranked}
        fallback = Selection(ranked[0], f"most votes ({votes[ranked[0].candidate_id]})", "votes", 0)
        if not self.config.selection.enabled:
            return fallback
        self._emit("run", {"kind": "stage", "stage": "selection"})
        log = TrajectoryLog.open(store.selection_log, "selection", self.observer)
        sel = self.config.selection
        conv = Conversation(
            self.llm,
            log,
            "selection",
            f"{task.task_id}:selection",
            Sampling(sel.temperature, max_tokens=sel.max_tokens, seed=self.config.seed),
            max_turns=sel.max_turns,
        )
        files = await touched_files(pristine, ranked, self.config.output_limit)
        try:
            return await select(conv, runner, task.issue, ranked, votes, files)
        except BudgetExceeded:
            why = "budget exhausted before the selection loop finished"
        except HarnessError as exc:
            why = f"selection failed: {exc}"
        return Selection(fallback.winner, f"{fallback.reasoning}; {why}", "votes", conv.turn)

    # Output --------------------------------------------------------------------------------
    def _finish(
        self,
        task: Task,
        store: RunStore,
        samples: list[SampleResult],
        matrix: Matrix,
        selection: Selection | None,
        timings: Timings,
        speculation: SpecStats | None,
    ) -> SolveResult:
        store.save_candidates(s.candidate for s in samples if s.candidate is not None)
        summary = self._summary(task, samples, matrix, selection, timings, speculation)
        patch = selection.winner.patch if selection else ""
        report = render_report(task, summary, matrix, selection)
        store.save_outputs(matrix, patch, summary, report)
        rows = tuple(_row(matrix, s.candidate) for s in samples)
        return self._result(summary, store.root, patch, matrix, selection, rows)

    def _summary(
        self,
        task: Task,
        samples: list[SampleResult],
        matrix: Matrix,
        selection: Selection | None,
        timings: Timings,
        speculation: SpecStats | None,
    ) -> RunSummary:
        winner = selection.winner if selection else None
        status: SolveStatus = (
            "patched" if winner is not None and winner.patch.strip() else "no_patch"
        )
        message = ""
        if status != "patched":
            errors = [f"{s.sample_id}: {s.message}" for s in samples if s.status != "finished"]
            message = "no sample produced a usable patch" + (
                f" ({'; '.join(errors)})" if errors else ""
            )
        tokens, cost = self.usage()
        return RunSummary(
            task_id=task.task_id,
            status=status,
            winner=winner.candidate_id if winner else None,
            selected_by=selection.by if selection else None,
            test_verified=winner is not None and _verified(matrix, winner),
            tokens=tokens,
            cost_usd=cost,
            duration_s=time.time() - timings.start,
            timings_s=dict(timings.stages),
            samples=tuple(s.summary() for s in samples),
            message=message,
            speculation=speculation,
            unpriced=self.unpriced,
        )

    def _result(
        self,
        summary: RunSummary,
        run_dir: Path,
        patch: str,
        matrix: Matrix,
        selection: Selection | None,
        rows: tuple[str, ...],
    ) -> SolveResult:
        winner = selection.winner if selection else None
        return SolveResult(
            task_id=summary.task_id,
            status=summary.status,
            patch=patch,
            run_dir=run_dir,
            test=winner.test if winner else None,
            test_verified=summary.test_verified,
            reasoning=selection.reasoning if selection else "",
            candidates=tuple(
                CandidateResult(c, matrix.votes(c.candidate_id), c.candidate_id == summary.winner)
                for c in matrix.ranked()
            ),
            tokens=summary.tokens,
            cost_usd=summary.cost_usd,
            duration_s=summary.duration_s,
            message=summary.message,
            stage_s=dict(summary.timings_s),
            speculation=summary.speculation.to_json() if summary.speculation else None,
            unpriced=summary.unpriced,
            samples=rows,
        )

    def _emit(self, source: str, event: dict[str, Any]) -> None:
        if self.observer is not None:
            self.observer(source, event)


def _verified(matrix: Matrix, winner: Candidate) -> bool:
    """The winner's own test fails on the original code and passes with the winner."""
    if winner.test is None:
        return False
    test_id = winner.source if winner.source in matrix.tests else winner.candidate_id
    original = matrix.original.get(test_id)
    cell = matrix.cell(winner.candidate_id, test_id)
    return original is not None and not original.passes and cell is not None and cell.passes


def _row(matrix: Matrix, candidate: Candidate | None) -> str:
    """The candidate id a sample's patch is graded under (its row: the smallest id among
    identical patches); "" when the sample left no patch or voting dropped it."""
    if candidate is None or candidate.candidate_id not in matrix.candidates:
        return ""
    return min(matrix.groups[patch_key(candidate.patch)])
