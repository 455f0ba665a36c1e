"""Frozen dataclasses that cross module boundaries (never bare dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class ExecResult:
    """What one command run in a sandbox produced."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False  # stdout or stderr was middle-truncated to the cap

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout then stderr, the way a terminal would roughly show them."""
        if self.stdout and self.stderr:
            sep = "" if self.stdout.endswith("\n") else "\n"
            return f"{self.stdout}{sep}{self.stderr}"
        return self.stdout or self.stderr


@dataclass(frozen=True)
class PatchResult:
    """Outcome of applying a unified diff; on failure the sandbox is unchanged."""

    applied: bool
    method: str = ""  # "git-apply", "patch-fuzz", or "" when nothing applied
    reason: str = ""


@dataclass(frozen=True)
class Task:
    """One issue to solve: the text, the repository, the base commit, the environment."""

    task_id: str
    issue: str
    repo: str  # host path of a git repository
    base_commit: str
    image: str | None = None  # sandbox image; None = the base image
    workdir: str = "/testbed"
    title: str = ""
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Every field, as `from_json` reads it back (task.json of a run directory)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """The task `to_json` wrote. Optional fields may be missing (older files); a missing
        or ill-typed required field is a ValueError that names it."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a task is a JSON object, not {type(data).__name__}")
        for key in ("task_id", "issue", "repo", "base_commit"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"task field {key!r} is missing or not a string")
        image = data.get("image")
        metadata = data.get("metadata") or {}
        if image is not None and not isinstance(image, str):
            raise ValueError("task field 'image' is not a string")
        if not isinstance(metadata, Mapping):
            raise ValueError("task field 'metadata' is not a mapping")
        return cls(
            task_id=data["task_id"],
            issue=data["issue"],
            repo=data["repo"],
            base_commit=data["base_commit"],
            image=image,
            workdir=str(data.get("workdir") or "/testbed"),
            title=str(data.get("title") or ""),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )


@dataclass(frozen=True)
class TestScript:
    """A standalone reproduction test: exit 0 fixed, 2 still broken, 1 crashed."""

    content: str
    path: str = "reproduce_issue.py"


@dataclass(frozen=True)
class Candidate:
    """A patch that some trajectory (or another system) proposes, with its test if any."""

    candidate_id: str
    patch: str
    test: TestScript | None = None
    source: str = ""  # trajectory id, or "ensemble:<model_name_or_path>"


@dataclass(frozen=True)
class CandidateResult:
    """A candidate after voting: how many generated tests it passed, and whether it won."""

    candidate: Candidate
    votes: int = 0
    selected: bool = False


SolveStatus = Literal["patched", "no_patch", "error"]


@dataclass(frozen=True)
class SolveResult:
    """What `harness solve` produced for one task (the run directory holds the details)."""

    task_id: str
    status: SolveStatus
    patch: str  # the winning diff; "" when there is none
    run_dir: Path
    test: TestScript | None = None  # the winner's reproduction test
    test_verified: bool = False  # that test fails on the original and passes with `patch`
    reasoning: str = ""  # why the selection picked the winner
    candidates: tuple[CandidateResult, ...] = ()
    tokens: int = 0
    cost_usd: float = 0.0
    duration_s: float = 0.0
    message: str = ""  # why there is no patch, or what went wrong
    stage_s: dict[str, float] = field(default_factory=dict, hash=False)  # context, samples, ...
    # Draft/target decoding counters of the run (SpecStats.to_json), when the engine speculates
    speculation: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    # Per trajectory in sampling order (sample-00 first): the id of the candidate its patch is
    # graded under (identical patches share one), "" when it left no usable patch.
    samples: tuple[str, ...] = field(default=(), hash=False, compare=False)
    unpriced: tuple[str, ...] = ()  # API models called without a known price: cost unknown

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.md"


class Solver(Protocol):
    """Solves tasks into run directories. `harness eval` and `harness bot` take one; whoever
    builds a solver calls `aclose` once after its last task."""

    async def solve(self, task: Task, run_dir: Path) -> SolveResult: ...

    async def aclose(self) -> None:
        """Release what the solver holds across tasks (a loaded model, say)."""
        ...
