"""Small real Solvers for the bot's tests: they clone the task's repository, edit it
deterministically, run their reproduction script before and after, and return a SolveResult.
`make_solver` is what `harness bot github --solver tests.bot.solvers:make_solver` loads (the
CLI's factory signature: the run's SolveConfig -> a Solver).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from harness.bot import SolveOptions
from harness.config import SolveConfig
from harness.types import Candidate, CandidateResult, SolveResult, Task, TestScript

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
SCRIPT = """import sys

from calc import add

sys.exit(0 if add(2, 3) == 5 else 2)
"""


def sh(cwd: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, check=check, capture_output=True, text=True)


class FixingSolver:
    """Fixes `calc.add` (or, with `patch_path`, edits that file instead)."""

    def __init__(
        self,
        options: SolveOptions = SolveOptions(),
        *,
        reasoning: str = "c1 makes add() return a + b; it passed both generated tests.",
        patch_path: str = "calc.py",
        fail: Exception | None = None,
    ) -> None:
        self.options = options
        self.reasoning = reasoning
        self.patch_path = patch_path
        self.fail = fail
        self.tasks: list[Task] = []
        self.closed = 0  # aclose calls

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        self.tasks.append(task)
        return await asyncio.to_thread(self._solve, task, run_dir)

    async def aclose(self) -> None:
        self.closed += 1

    def _solve(self, task: Task, run_dir: Path) -> SolveResult:
        run_dir.mkdir(parents=True, exist_ok=True)
        seen = {
            "github_token_in_env": any(k in os.environ for k in ("GITHUB_TOKEN", "GH_TOKEN")),
            "options": asdict(self.options),
            "task_id": task.task_id,
            "base_commit": task.base_commit,
            "issue": task.issue,
        }
        (run_dir / "seen.json").write_text(json.dumps(seen))
        # Everything this process could hand to a model or a sandbox: its environment as the
        # kernel keeps it (not only os.environ), and who it is.
        spied = {
            "pid": os.getpid(),
            "proc_environ": Path("/proc/self/environ").read_bytes().decode(errors="replace"),
            "os_environ": dict(os.environ),
        }
        (run_dir / "environ.json").write_text(json.dumps(spied))
        if self.fail is not None:
            raise self.fail
        work = run_dir / "work"
        sh(run_dir, "git", "clone", "-q", task.repo, str(work))
        sh(work, "git", "checkout", "-q", task.base_commit)
        (work / "reproduce_issue.py").write_text(SCRIPT)
        before = sh(work, sys.executable, "reproduce_issue.py", check=False).returncode
        target = work / self.patch_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(FIXED if self.patch_path == "calc.py" else "name: x\n")
        after = sh(work, sys.executable, "reproduce_issue.py", check=False).returncode
        (work / "reproduce_issue.py").unlink()
        sh(work, "git", "add", "-A")
        patch = sh(work, "git", "diff", "--cached").stdout
        test = TestScript(content=SCRIPT)
        (run_dir / "report.md").write_text(f"# {task.task_id}\n\nbefore={before} after={after}\n")
        winner = Candidate("c1", patch, test, source="traj-0")
        loser = Candidate("c2", "--- a/calc.py\n+++ b/calc.py\n", None, source="traj-1")
        return SolveResult(
            task_id=task.task_id,
            status="patched",
            patch=patch,
            run_dir=run_dir,
            test=test,
            test_verified=before == 2 and after == 0,
            reasoning=self.reasoning,
            candidates=(
                CandidateResult(winner, votes=2, selected=True),
                CandidateResult(loser, votes=0),
            ),
            tokens=12_345,
            cost_usd=0.42,
            duration_s=93.0,
        )


class NothingSolver:
    """Tries and finds no fix."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        self.tasks.append(task)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "report.md").write_text("# no patch\n")
        tried = tuple(
            CandidateResult(Candidate(f"c{i}", "", None, source=f"traj-{i}")) for i in range(3)
        )
        return SolveResult(
            task_id=task.task_id,
            status="no_patch",
            patch="",
            run_dir=run_dir,
            candidates=tried,
            message="no candidate passed the reproduction tests",
            tokens=5000,
        )


def _options(config: SolveConfig) -> SolveOptions:
    """What a trigger may set, as this run's config has it."""
    return SolveOptions(config.samples, config.model, config.budget.max_usd)


def make_solver(config: SolveConfig) -> FixingSolver:
    return FixingSolver(_options(config))


def make_leaky_solver(config: SolveConfig) -> FixingSolver:
    """Puts the environment's API key in its reasoning, as a careless model might."""
    key = os.environ.get("OPENAI_API_KEY", "")
    return FixingSolver(_options(config), reasoning=f"debug: OPENAI_API_KEY={key}")


class ClosingSolver(NothingSolver):
    """Leaves a `closed` file in the run directory when closed (or raises while solving),
    so a test can see from outside that the process closing it did."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.run_dir: Path | None = None

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        self.run_dir = run_dir
        if self.fail:
            raise RuntimeError("the solver broke")
        return await super().solve(task, run_dir)

    async def aclose(self) -> None:
        await super().aclose()
        if self.run_dir is not None:
            (self.run_dir / "closed").write_text(str(self.closed))


def make_closing_solver(config: SolveConfig) -> ClosingSolver:
    return ClosingSolver()


def make_failing_closing_solver(config: SolveConfig) -> ClosingSolver:
    return ClosingSolver(fail=True)
