"""A run directory: the task and config of a run, what its stages record as they go, and its
outputs. The orchestrator writes through it; `harness solve --resume` reads it back.

    task.json, config.yaml   the problem (Task.to_json) and the effective config
    context.jsonl, context.json, trajectories/, votes.jsonl, selection.jsonl, spend.jsonl
                             appended by the stages as they happen (harness.store)
    candidates/, votes.json, patch.diff, summary.json, report.md    written at the end
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from harness.config import SolveConfig, load_config, to_dict
from harness.errors import TaskError
from harness.store import read_json, write_json, write_text
from harness.types import Candidate, Task

if TYPE_CHECKING:
    from harness.agent.context import ContextResult
    from harness.report import RunSummary
    from harness.selectors.voting import Matrix

TASK, CONFIG = "task.json", "config.yaml"
_HINT = "pass the directory a previous `harness solve` wrote (it holds task.json)"


class RunStore:
    """The files of one run directory, by what they hold."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # The problem ---------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a run was started here (its task is recorded)."""
        return (self.root / TASK).exists()

    def create(self, task: Task, config: SolveConfig) -> None:
        """Record the task and the effective config of a new run."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / TASK, task.to_json())
        write_text(self.root / CONFIG, yaml.safe_dump(to_dict(config), sort_keys=False))

    def load(self) -> tuple[Task, SolveConfig]:
        """The task and config of the run (for --resume). TaskError when there is none or it
        cannot be read; a config that no longer validates is the ConfigError load_config raises."""
        if not self.exists():
            raise TaskError(f"{self.root} is not a run directory (no {TASK})", hint=_HINT)
        try:
            task = Task.from_json(read_json(self.root / TASK))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise TaskError(f"{self.root / TASK} cannot be read: {reason}", hint=_HINT) from exc
        return task, load_config(self.root / CONFIG)

    # What the stages append as they go -----------------------------------------------------
    def trajectory_log(self, sample_id: str) -> Path:
        return self.root / "trajectories" / f"{sample_id}.jsonl"

    @property
    def context_log(self) -> Path:
        return self.root / "context.jsonl"

    @property
    def votes_log(self) -> Path:
        return self.root / "votes.jsonl"

    @property
    def selection_log(self) -> Path:
        return self.root / "selection.jsonl"

    @property
    def spend_log(self) -> Path:
        return self.root / "spend.jsonl"

    def context_text(self) -> str | None:
        """The packed context of a run that already chose its files, else None."""
        path = self.root / "context.json"
        if not path.exists():
            return None
        try:
            return str(read_json(path)["text"])
        except (OSError, ValueError, KeyError, TypeError):  # unreadable: choose again (the
            # relevance verdicts in context.jsonl are reused)
            return None

    def save_context(self, result: ContextResult) -> None:
        write_json(self.root / "context.json", result.to_json())

    # Outputs -------------------------------------------------------------------------------
    def save_candidates(self, candidates: Iterable[Candidate]) -> None:
        """Each candidate's patch (and its test, when it has one) under candidates/."""
        for candidate in candidates:
            base = self.root / "candidates" / candidate.candidate_id
            write_text(base.with_name(f"{base.name}.diff"), candidate.patch)
            if candidate.test is not None:
                write_text(base.with_name(f"{base.name}.test.py"), candidate.test.content)

    def save_outputs(self, matrix: Matrix, patch: str, summary: RunSummary, report: str) -> None:
        """The final vote matrix, the winning patch, summary.json and report.md."""
        write_json(self.root / "votes.json", matrix.to_json())
        write_text(self.root / "patch.diff", patch)
        write_json(self.root / "summary.json", summary.to_json())
        write_text(self.root / "report.md", report)
