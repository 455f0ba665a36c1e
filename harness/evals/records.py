"""What a batch writes, one JSON line per record: grades, solves, predictions.

Appending a line and flushing it is the unit of progress: a killed run loses at most the
record it was writing, and a torn last line is skipped when the file is read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.store import read_jsonl

GradeStatus = Literal[
    "resolved",  # every FAIL_TO_PASS and PASS_TO_PASS test passes
    "unresolved",  # the tests ran; some required test failed or did not run
    "empty_patch",  # nothing to grade
    "patch_failed",  # the patch does not apply to the base commit
    "test_patch_failed",  # the data set's test patch does not apply (a data-set problem)
    "timeout",  # the test command ran past the time limit
    "env_build_failed",  # the environment image could not be built or pulled
    "repo_failed",  # the repository could not be cloned (or the mirror is missing)
    "no_spec",  # no install spec for this (repo, version)
    "unknown_instance",  # the id is not in the data set
    "malformed_prediction",  # a predictions line that does not parse
    "error",  # anything else (sandbox failure, ...); `message` says what
]
GRADE_STATUSES: tuple[str, ...] = GradeStatus.__args__  # type: ignore[attr-defined]
SolveRecordStatus = Literal["patched", "no_patch", "error", "skipped"]


def patch_sha(patch: str) -> str:
    """A short content hash, so identical candidate patches are graded once."""
    return hashlib.sha256(patch.strip().encode()).hexdigest()[:16] if patch.strip() else ""


@dataclass(frozen=True)
class TestOutcome:
    """Which of a test list passed and which failed (or did not run)."""

    success: tuple[str, ...] = ()
    failure: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> TestOutcome:
        data = data or {}
        return cls(tuple(data.get("success", ())), tuple(data.get("failure", ())))


@dataclass(frozen=True)
class GradeResult:
    """The grade of one patch for one instance."""

    instance_id: str
    status: GradeStatus
    candidate_id: str = "final"  # "final" = the prediction / the solver's pick
    model: str = ""  # model_name_or_path of the predictions
    patch_sha: str = ""
    fail_to_pass: TestOutcome = field(default_factory=TestOutcome)
    pass_to_pass: TestOutcome = field(default_factory=TestOutcome)
    message: str = ""
    log_path: str = ""  # relative to the output directory
    image: str = ""
    python_requested: str = ""
    python_used: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)  # stage -> seconds

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["resolved"] = self.resolved
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GradeResult:
        return cls(
            instance_id=str(data["instance_id"]),
            status=data["status"],
            candidate_id=str(data.get("candidate_id", "final")),
            model=str(data.get("model", "")),
            patch_sha=str(data.get("patch_sha", "")),
            fail_to_pass=TestOutcome.from_json(data.get("fail_to_pass")),
            pass_to_pass=TestOutcome.from_json(data.get("pass_to_pass")),
            message=str(data.get("message", "")),
            log_path=str(data.get("log_path", "")),
            image=str(data.get("image", "")),
            python_requested=str(data.get("python_requested", "")),
            python_used=str(data.get("python_used", "")),
            timings={k: float(v) for k, v in (data.get("timings") or {}).items()},
        )

    def relabel(self, candidate_id: str) -> GradeResult:
        """The same grade under another candidate id (identical patches share a grade)."""
        return GradeResult(**{**self.__dict__, "candidate_id": candidate_id})


@dataclass(frozen=True)
class CandidateRecord:
    candidate_id: str
    patch: str
    votes: int = 0
    selected: bool = False
    source: str = ""


@dataclass(frozen=True)
class SolveRecord:
    """What the solver produced for one instance (a SolveResult, flattened for JSON)."""

    instance_id: str
    status: SolveRecordStatus
    patch: str = ""
    candidates: tuple[CandidateRecord, ...] = ()
    tokens: int = 0
    cost_usd: float | None = 0.0  # None: unknown (an API model without a price was called)
    duration_s: float = 0.0
    message: str = ""
    run_dir: str = ""
    model: str = ""
    stage_s: Mapping[str, float] = field(default_factory=dict)  # the solve's own stages
    speculation: Mapping[str, Any] | None = None  # draft/target counters (SpecStats.to_json)
    # Per trajectory in sampling order: the candidate id its patch is graded under ("" none)
    samples: tuple[str, ...] = ()
    # Tool-call timings read from the solve's logs (toolgaps.py): sandbox exec seconds per
    # stage, and per tool hint the seconds between a reply and the program's next request
    exec_s: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    gap_s: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    unpriced: tuple[str, ...] = ()  # the API models without a price that it called

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SolveRecord:
        return cls(
            instance_id=str(data["instance_id"]),
            status=data["status"],
            patch=str(data.get("patch", "")),
            candidates=tuple(CandidateRecord(**c) for c in data.get("candidates", ())),
            tokens=int(data.get("tokens", 0)),
            cost_usd=_cost(data.get("cost_usd", 0.0)),
            duration_s=float(data.get("duration_s", 0.0)),
            message=str(data.get("message", "")),
            run_dir=str(data.get("run_dir", "")),
            model=str(data.get("model", "")),
            stage_s={str(k): float(v) for k, v in (data.get("stage_s") or {}).items()},
            speculation=data.get("speculation") or None,
            samples=tuple(str(c) for c in data.get("samples") or ()),
            exec_s=_series(data.get("exec_s")),
            gap_s=_series(data.get("gap_s")),
            unpriced=tuple(str(m) for m in data.get("unpriced") or ()),
        )


def _series(data: Any) -> dict[str, tuple[float, ...]]:
    return {str(k): tuple(float(x) for x in v) for k, v in (data or {}).items()}


def unpriced_models(solves: Iterable[SolveRecord]) -> tuple[str, ...]:
    """The API models without a price that any solve called (its cost is unknown)."""
    names = [m for s in solves for m in (s.unpriced or ((s.model,) if s.cost_usd is None else ()))]
    return tuple(dict.fromkeys(names))


def _cost(value: Any) -> float | None:
    return None if value is None else float(value)


def read_grades(path: Path) -> list[GradeResult]:
    return [GradeResult.from_json(d) for d in read_jsonl(path) if "status" in d]


def read_solves(path: Path) -> list[SolveRecord]:
    return [SolveRecord.from_json(d) for d in read_jsonl(path) if "status" in d]
