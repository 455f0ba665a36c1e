"""`--solver` factories of each signature the loader takes (tests/cli/test_solvers.py)."""

from __future__ import annotations

from pathlib import Path

from harness.bot import SolveOptions
from harness.config import SolveConfig
from harness.types import SolveResult, Task


class Recorder:
    """Records what it was built from; solving is not what these tests are about."""

    def __init__(self, config: SolveConfig | None = None, options: SolveOptions | None = None):
        self.config = config
        self.options = options

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        return SolveResult(task.task_id, "no_patch", "", run_dir)

    async def aclose(self) -> None:
        return None


def recording(config: SolveConfig) -> Recorder:
    return Recorder(config)


def zero_argument() -> Recorder:  # the old form of `eval run --solver`
    return Recorder()


def from_options(options: SolveOptions) -> Recorder:  # the old form of `bot github --solver`
    return Recorder(options=options)


NOT_CALLABLE = 3
