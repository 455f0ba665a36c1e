"""Small real Solvers for `harness eval run` tests (`--solver tests.evals.solvers:NAME`).

They open a real docker sandbox from the Task (its checkout and environment image), apply
known patches there and return the sandbox's own diffs as candidates. Knobs come from the
environment because the CLI builds solvers from a zero-argument factory.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from harness.config import SolveConfig
from harness.llm.model_store import default_cache_dir
from harness.sandboxes import SandboxSpec, make_backend
from harness.types import Candidate, CandidateResult, SolveResult, Task
from tests.evals.conftest import GOLD, WRONG

DELAY_ENV = "HARNESS_TEST_SOLVER_DELAY"  # seconds to wait before solving (kill tests)
CALLS_LOG = "solver-calls.log"  # under the run directory: one line per solve started


class KnownPatchSolver:
    """Candidates: the wrong fix (2 votes), the right fix (3 votes), the right fix again
    (1 vote); picks the most voted. Coverage 1, selection right, one duplicate patch."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        # The CLI's own lookup ($HARNESS_CACHE_DIR, else the user's cache): never a fixed path.
        self.cache_dir = cache_dir or default_cache_dir(os.environ, Path.home())
        self.delay = float(os.environ.get(DELAY_ENV, "0"))

    async def aclose(self) -> None:
        return None  # holds nothing between tasks

    async def _diff_after(self, task: Task, patch: str) -> str:
        spec = SandboxSpec(repo=Path(task.repo), commit=task.base_commit, image=task.image)
        async with make_backend("docker", self.cache_dir) as backend:
            box = await backend.open(spec)
            async with box:
                applied = await box.apply_patch(patch)
                if not applied.applied:
                    raise RuntimeError(applied.reason)
                return str(await box.diff())

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        start = time.monotonic()
        with open(run_dir.parents[2] / CALLS_LOG, "a") as fh:
            fh.write(task.task_id + "\n")
        if self.delay:
            await asyncio.sleep(self.delay)
        wrong = await self._diff_after(task, WRONG)
        right = await self._diff_after(task, GOLD)
        cands = (
            CandidateResult(Candidate("s0", wrong, source="traj-0"), votes=2),
            CandidateResult(Candidate("s1", right, source="traj-1"), votes=3, selected=True),
            CandidateResult(Candidate("s2", right, source="traj-2"), votes=1),
        )
        (run_dir / "report.md").write_text(f"# {task.task_id}\npicked s1\n")
        return SolveResult(
            task_id=task.task_id,
            status="patched",
            patch=right,
            run_dir=run_dir,
            reasoning="most votes",
            candidates=cands,
            tokens=1000,
            cost_usd=0.01,
            duration_s=time.monotonic() - start,
        )


class CrashingSolver:
    """Raises: the batch must record it and go on."""

    def __init__(self) -> None:
        self.closed = 0  # aclose calls

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        raise RuntimeError(f"boom on {task.task_id}")

    async def aclose(self) -> None:
        self.closed += 1


def known_patch() -> KnownPatchSolver:
    return KnownPatchSolver()


def crashing() -> CrashingSolver:
    return CrashingSolver()


def known_patch_for(config: SolveConfig) -> KnownPatchSolver:
    """`--solver tests.evals.solvers:known_patch_for`: the factory signature of the CLI (the
    run's SolveConfig -> a Solver); `known_patch` is the old zero-argument form."""
    return KnownPatchSolver()
