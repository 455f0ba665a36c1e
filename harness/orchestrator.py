"""Parallel x serial sampling: N trajectories at once, each testing then editing, with voting
filling in as candidates appear (no stage barrier), then the selection loop.

Every step is persisted under the run directory as it happens; `resume()` continues a run
after a crash or Ctrl-C without redoing finished work. One trajectory failing never stops
the others; an exhausted budget stops new model calls and the run finishes with what exists.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from asyncio_pool import AioPool

from harness.agent.context import ContextFinder, ContextResult, pack
from harness.agent.editing import EditingOutcome, restored_editing, run_editing
from harness.agent.repro import ReproRunner
from harness.agent.testing import TestingOutcome, restored_outcome, run_testing
from harness.agent.trajectory import Conversation, Observer, TrajectoryLog
from harness.config import SolveConfig, load_config, to_dict
from harness.errors import BudgetExceeded, HarnessError, TaskError
from harness.llm.base import LLM, Sampling
from harness.report import write_report
from harness.sandboxes import Limits, Sandbox, SandboxBackend, SandboxSpec
from harness.selectors.selection_loop import Selection, select, touched_files
from harness.selectors.voting import Matrix, Voting, patch_key
from harness.store import read_json, write_json, write_text
from harness.types import Candidate, CandidateResult, SolveResult, SolveStatus, Task


@dataclass
class SampleResult:
    sample_id: str
    status: str  # "finished" | "budget" | "error"
    candidate: Candidate | None = None
    testing: TestingOutcome | None = None
    editing: EditingOutcome | None = None
    message: str = ""
    started: float = 0.0
    test_ready: float = 0.0
    finished: float = 0.0


@dataclass
class Timings:
    start: float = field(default_factory=time.time)
    stages: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, since: float) -> float:
        now = time.time()
        self.stages[name] = round(self.stages.get(name, 0.0) + now - since, 3)
        return now


class Orchestrator:
    """Solves one task. Dependencies come in: the model, the sandbox backend, an observer."""

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
    ) -> None:
        self.config = config
        self.llm = llm
        self.context_llm = context_llm or llm  # a cheaper model may judge relevance
        self.backend = backend
        self.observer = observer
        self.extra_candidates = extra_candidates or []
        self.usage = usage or (lambda: (0, 0.0))

    # Run directory -------------------------------------------------------------------------
    @staticmethod
    def prepare(run_dir: Path, task: Task, config: SolveConfig) -> None:
        """Write the task and the effective config (a new run)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            run_dir / "task.json",
            {
                "task_id": task.task_id,
                "issue": task.issue,
                "repo": task.repo,
                "base_commit": task.base_commit,
                "image": task.image,
                "workdir": task.workdir,
                "title": task.title,
                "metadata": task.metadata,
            },
        )
        write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))

    @staticmethod
    def load(run_dir: Path) -> tuple[Task, SolveConfig]:
        """Task and config of an existing run directory (for --resume)."""
        if not (run_dir / "task.json").exists():
            raise TaskError(
                f"{run_dir} is not a run directory (no task.json)",
                hint="pass the directory a previous `harness solve` wrote",
            )
        data = read_json(run_dir / "task.json")
        task = Task(
            data["task_id"],
            data["issue"],
            data["repo"],
            data["base_commit"],
            data.get("image"),
            data.get("workdir", "/testbed"),
            data.get("title", ""),
            data.get("metadata") or {},
        )
        return task, load_config(run_dir / "config.yaml")

    # The run -------------------------------------------------------------------------------
    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        if not (run_dir / "task.json").exists():
            self.prepare(run_dir, task, self.config)
        timings = Timings()
        spec_before = speculation_stats(self.llm)
        cfg = self.config
        spec = SandboxSpec(
            repo=Path(task.repo),
            commit=task.base_commit,
            image=task.image or cfg.sandbox.image,
            workdir=task.workdir,
            network=cfg.sandbox.network,
            limits=Limits(
                cpus=cfg.sandbox.cpus, memory_mb=cfg.sandbox.memory_mb, pids=cfg.sandbox.pids
            ),
            ca_bundle=cfg.sandbox.ca_bundle,
        )
        self._emit("run", {"kind": "stage", "stage": "sandbox"})
        pristine = await self.backend.open(spec)
        async with pristine:
            runner = ReproRunner(
                pristine,
                timeout=cfg.testing.exec_timeout,
                output_limit=cfg.output_limit,
                limit=asyncio.Semaphore(cfg.concurrency.execs),
                python_path=cfg.sandbox.python_path,
            )
            since = time.time()
            context = await self._context(task, pristine, run_dir)
            since = timings.mark("context", since)
            voting = Voting(runner, run_dir / "votes.jsonl")
            for candidate in self.extra_candidates:
                voting.add_candidate(candidate)
            samples = await self._samples(task, pristine, runner, context, voting, run_dir)
            since = timings.mark("samples", since)
            matrix = await voting.wait()
            since = timings.mark("voting_tail", since)
            selection = await self._select(task, pristine, runner, matrix, run_dir)
            timings.mark("selection", since)
        spec_after = speculation_stats(self.llm)
        speculation = spec_after.since(spec_before).to_json() if spec_after is not None else None
        return self._finish(task, run_dir, samples, matrix, selection, timings, speculation)

    async def _context(self, task: Task, pristine: Sandbox, run_dir: Path) -> str:
        path = run_dir / "context.json"
        if path.exists():
            return str(read_json(path)["text"])
        self._emit("run", {"kind": "stage", "stage": "context"})
        if not self.config.context.enabled:
            result = ContextResult((), "")
        else:
            finder = ContextFinder(
                self.context_llm,
                self.config.context,
                run_dir / "context.jsonl",
                program_id=f"{task.task_id}",
            )
            try:
                result = await finder.find(pristine, task.issue)
            except BudgetExceeded as exc:
                self._emit("run", {"kind": "budget", "message": str(exc)})
                result = ContextResult((), pack((), 0))
        write_json(
            path,
            {
                "files": [
                    {
                        "path": f.path,
                        "relevant": f.relevant,
                        "note": f.note,
                        "lexical": round(f.lexical, 3),
                    }
                    for f in result.files
                ],
                "text": result.text,
            },
        )
        return result.text

    async def _samples(
        self,
        task: Task,
        pristine: Sandbox,
        runner: ReproRunner,
        context: str,
        voting: Voting,
        run_dir: Path,
    ) -> list[SampleResult]:
        size = self.config.concurrency.samples or self.config.samples
        results: list[SampleResult] = []

        async def one(index: int) -> None:
            try:
                result = await self._sample(index, task, pristine, runner, context, run_dir)
            except Exception as exc:  # escaped the sample's own handling (closing its sandbox)
                result = self._failed_sample(index, exc, run_dir)
            results.append(result)
            if result.candidate is not None:
                # Voting starts on this candidate now, while other samples still run.
                await voting.add_test(result.sample_id, result.candidate.test)
                voting.add_candidate(result.candidate)

        async with AioPool(size=size) as pool:
            for index in range(self.config.samples):
                pool.spawn_n(one(index))
        return sorted(results, key=lambda r: r.sample_id)

    async def _sample(
        self,
        index: int,
        task: Task,
        pristine: Sandbox,
        runner: ReproRunner,
        context: str,
        run_dir: Path,
    ) -> SampleResult:
        sample_id = f"sample-{index:02d}"
        log = TrajectoryLog.open(
            run_dir / "trajectories" / f"{sample_id}.jsonl", sample_id, self.observer
        )
        result = SampleResult(sample_id, "finished", started=time.time())
        cfg = self.config
        program = f"{task.task_id}:{sample_id}"
        box: Sandbox | None = None
        try:
            if "testing" in log.outcomes:
                testing = restored_outcome(log.outcomes["testing"])
            else:
                self._emit(sample_id, {"kind": "stage", "stage": "testing"})
                conv = Conversation(
                    self.llm,
                    log,
                    "testing",
                    program,
                    Sampling(
                        cfg.testing.temperature,
                        max_tokens=cfg.testing.max_tokens,
                        seed=cfg.seed + index,
                    ),
                    max_turns=cfg.testing.max_turns,
                )
                testing = await run_testing(conv, runner, task, context, pristine.workdir)
            result.testing, result.test_ready = testing, time.time()
            if testing.test is not None and testing.original is not None:
                runner.remember_original(testing.test, testing.original)
            if "editing" in log.outcomes:
                editing = restored_editing(log.outcomes["editing"])
            else:
                self._emit(sample_id, {"kind": "stage", "stage": "editing"})
                box = await pristine.fork()
                conv = Conversation(
                    self.llm,
                    log,
                    "editing",
                    program,
                    Sampling(
                        cfg.editing.temperature,
                        max_tokens=cfg.editing.max_tokens,
                        seed=cfg.seed + 1000 + index,
                    ),
                    max_turns=cfg.editing.max_turns,
                )
                editing = await run_editing(
                    conv, runner, box, task, context, testing.test, testing.original
                )
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

    def _failed_sample(self, index: int, exc: Exception, run_dir: Path) -> SampleResult:
        sample_id = f"sample-{index:02d}"
        message = f"{type(exc).__name__}: {exc}"
        log = TrajectoryLog.open(run_dir / "trajectories" / f"{sample_id}.jsonl", sample_id)
        log.record("error", "sample", message=message, traceback=traceback.format_exc())
        now = time.time()
        self._emit(sample_id, {"kind": "stage", "stage": "error"})
        return SampleResult(sample_id, "error", message=message, started=now, finished=now)

    async def _select(
        self, task: Task, pristine: Sandbox, runner: ReproRunner, matrix: Matrix, run_dir: Path
    ) -> Selection | None:
        ranked = matrix.ranked()[: self.config.selection.top_k]
        if not ranked:
            return None
        votes = {c.candidate_id: matrix.votes(c.candidate_id) for c in ranked}
        fallback = Selection(ranked[0], f"most votes ({votes[ranked[0].candidate_id]})", "votes", 0)
        if not self.config.selection.enabled:
            return fallback
        self._emit("run", {"kind": "stage", "stage": "selection"})
        log = TrajectoryLog.open(run_dir / "selection.jsonl", "selection", self.observer)
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
            return Selection(
                fallback.winner,
                fallback.reasoning + "; budget exhausted before the selection loop finished",
                "votes",
                conv.turn,
            )
        except HarnessError as exc:
            return Selection(
                fallback.winner,
                f"{fallback.reasoning}; selection failed: {exc}",
                "votes",
                conv.turn,
            )

    # Output --------------------------------------------------------------------------------
    def _finish(
        self,
        task: Task,
        run_dir: Path,
        samples: list[SampleResult],
        matrix: Matrix,
        selection: Selection | None,
        timings: Timings,
        speculation: dict[str, Any] | None = None,
    ) -> SolveResult:
        for sample in samples:
            if sample.candidate is None:
                continue
            cid = sample.candidate.candidate_id
            write_text(run_dir / "candidates" / f"{cid}.diff", sample.candidate.patch)
            if sample.candidate.test is not None:
                write_text(run_dir / "candidates" / f"{cid}.test.py", sample.candidate.test.content)
        write_json(run_dir / "votes.json", matrix.to_json())
        winner = selection.winner if selection else None
        patch = winner.patch if winner else ""
        write_text(run_dir / "patch.diff", patch)
        verified = False
        if winner is not None and winner.test is not None:
            verified = _verified(matrix, winner)
        candidates = tuple(
            CandidateResult(
                c,
                matrix.votes(c.candidate_id),
                winner is not None and c.candidate_id == winner.candidate_id,
            )
            for c in matrix.ranked()
        )
        tokens, cost = self.usage()
        duration = time.time() - timings.start
        status: SolveStatus = "patched" if patch.strip() else "no_patch"
        errors = [f"{s.sample_id}: {s.message}" for s in samples if s.status != "finished"]
        message = (
            ""
            if status == "patched"
            else (
                "no sample produced a usable patch" + (f" ({'; '.join(errors)})" if errors else "")
            )
        )
        result = SolveResult(
            task_id=task.task_id,
            status=status,
            patch=patch,
            run_dir=run_dir,
            test=winner.test if winner else None,
            test_verified=verified,
            reasoning=selection.reasoning if selection else "",
            candidates=candidates,
            tokens=tokens,
            cost_usd=cost,
            duration_s=duration,
            message=message,
            stage_s=dict(timings.stages),
            speculation=speculation,
            samples=tuple(_row(matrix, s.candidate) for s in samples),
        )
        summary: dict[str, Any] = {
            "task_id": task.task_id,
            "status": status,
            "winner": winner.candidate_id if winner else None,
            "selected_by": selection.by if selection else None,
            "test_verified": verified,
            "tokens": tokens,
            "cost_usd": round(cost, 6),
            "duration_s": round(duration, 3),
            "timings_s": timings.stages,
            "samples": [
                {
                    "sample_id": s.sample_id,
                    "status": s.status,
                    "message": s.message,
                    "testing_turns": s.testing.turns if s.testing else 0,
                    "reproduced": s.testing.reproduced if s.testing else False,
                    "editing_turns": s.editing.turns if s.editing else 0,
                    "editing_reason": s.editing.reason if s.editing else None,
                    "seconds": round(s.finished - s.started, 3),
                    "testing_seconds": round(max(s.test_ready - s.started, 0.0), 3),
                }
                for s in samples
            ],
            "message": message,
        }
        if speculation is not None:
            summary["speculation"] = speculation
        write_json(run_dir / "summary.json", summary)
        write_report(run_dir, task, result, summary, matrix, selection)
        return result

    def _emit(self, source: str, event: dict[str, Any]) -> None:
        if self.observer is not None:
            self.observer(source, event)


def speculation_stats(llm: object) -> Any:
    """The draft/target counters of the engine behind `llm` (through wrappers such as the
    budget's `.inner`), or None when it does not speculate. Engine-wide: runs sharing one
    engine at the same time count in each other's span."""
    for _ in range(8):
        stats = getattr(llm, "spec_stats", None)
        if stats is not None or not hasattr(llm, "inner"):
            return stats
        llm = llm.inner  # type: ignore[attr-defined]
    return None


def _verified(matrix: Matrix, winner: Candidate) -> bool:
    """The winner's own test fails on the original code and passes with the winner."""
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
