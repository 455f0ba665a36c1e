"""The run summary (what summary.json holds) and report.md: what was tried, the votes, the
winner and why, tokens, cost, time per stage."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.text import middle_truncate
from harness.types import SolveStatus, Task

if TYPE_CHECKING:
    from harness.llm.engine.spec_policy import SpecStats
    from harness.selectors.selection_loop import Selection
    from harness.selectors.voting import Matrix

ISSUE_CHARS = 3000  # of the issue shown in the report (middle-truncated)
REASONING_CHARS = 2000
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True)
class SampleSummary:
    """How one trajectory went."""

    sample_id: str
    status: str  # "finished" | "budget" | "error"
    message: str = ""
    testing_turns: int = 0
    reproduced: bool = False
    editing_turns: int = 0
    editing_reason: str | None = None  # "done" | "max_turns"; None when editing never ended
    seconds: float = 0.0
    testing_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "status": self.status,
            "message": self.message,
            "testing_turns": self.testing_turns,
            "reproduced": self.reproduced,
            "editing_turns": self.editing_turns,
            "editing_reason": self.editing_reason,
            "seconds": round(self.seconds, 3),
            "testing_seconds": round(self.testing_seconds, 3),
        }


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one run: summary.json is written from it, report.md rendered from it."""

    task_id: str
    status: SolveStatus
    winner: str | None = None
    selected_by: str | None = None  # "model" | "votes" | "only-candidate"
    test_verified: bool = False  # the winner's test fails on the original, passes with it
    tokens: int = 0
    cost_usd: float = 0.0
    duration_s: float = 0.0
    timings_s: Mapping[str, float] = field(default_factory=dict)
    samples: tuple[SampleSummary, ...] = ()
    message: str = ""  # why there is no patch
    speculation: SpecStats | None = None  # the run's draft/target counters
    unpriced: tuple[str, ...] = ()  # API models called with no known price: cost unknown

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "status": self.status,
            "winner": self.winner,
            "selected_by": self.selected_by,
            "test_verified": self.test_verified,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "duration_s": round(self.duration_s, 3),
            "timings_s": dict(self.timings_s),
            "samples": [s.to_json() for s in self.samples],
            "message": self.message,
        }
        if self.unpriced:
            data["unpriced"] = list(self.unpriced)
        if self.speculation is not None:
            data["speculation"] = self.speculation.to_json()
        return data


def fenced(text: str, info: str = "") -> list[str]:
    """`text` as a fenced code block whose fence is longer than any backtick run in it, so a
    fence inside the text (an issue quoting code) cannot close the block early."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text, fence]


def render_report(
    task: Task, summary: RunSummary, matrix: Matrix, selection: Selection | None
) -> str:
    """report.md of a finished run."""
    lines = [
        *_verdict(task, summary, selection),
        *_issue(task),
        *_tried(summary, matrix),
        *_votes(matrix, selection),
        *_winner(summary, selection),
        *_cost(summary),
        *_speculation(summary.speculation),
    ]
    return "\n".join(lines) + "\n"


def _verdict(task: Task, summary: RunSummary, selection: Selection | None) -> list[str]:
    verdict = {"patched": "a patch was selected", "no_patch": "no patch", "error": "error"}
    chosen = (
        f" — winner `{selection.winner.candidate_id}` (chosen by {selection.by})"
        if selection
        else ""
    )
    lines = [
        f"# harness report: {task.task_id}",
        "",
        f"**Result:** {verdict[summary.status]}{chosen}",
        "",
    ]
    if summary.message:
        lines += [f"> {summary.message}", ""]
    return lines


def _issue(task: Task) -> list[str]:
    return [
        "## Issue",
        "",
        *fenced(middle_truncate(task.issue.strip(), ISSUE_CHARS), "text"),
        "",
        f"Repository `{task.repo}` at `{task.base_commit[:12]}`.",
        "",
    ]


def _tried(summary: RunSummary, matrix: Matrix) -> list[str]:
    lines = [
        "## What was tried",
        "",
        "| sample | status | testing turns | reproduced | editing turns | ended by | seconds |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for s in summary.samples:
        lines.append(
            f"| {s.sample_id} | {s.status} | {s.testing_turns} | "
            f"{'yes' if s.reproduced else 'no'} | {s.editing_turns} | "
            f"{s.editing_reason or '-'} | {round(s.seconds, 3)} |"
        )
    for s in summary.samples:
        if s.message:
            lines.append(f"\n- `{s.sample_id}`: {s.message}")
    if matrix.dropped:
        lines += [
            "",
            "Dropped before voting: "
            + ", ".join(f"`{c}` ({why})" for c, why in sorted(matrix.dropped.items())),
        ]
    return lines


def _votes(matrix: Matrix, selection: Selection | None) -> list[str]:
    winner_id = selection.winner.candidate_id if selection else None
    return ["", "## Votes", "", vote_table(matrix, winner_id)]


def _winner(summary: RunSummary, selection: Selection | None) -> list[str]:
    if selection is None:
        return []
    winner = selection.winner
    lines = [
        "## The winner and why",
        "",
        f"`{winner.candidate_id}`, chosen by {selection.by}"
        + (f" after {selection.turns} selection turn(s)" if selection.turns else "")
        + ".",
        "",
        middle_truncate(selection.reasoning.strip(), REASONING_CHARS) or "-",
        "",
    ]
    if winner.test is not None:
        shows = (
            "fails on the original code and passes with the patch."
            if summary.test_verified
            else "does not demonstrate the fix on its own."
        )
        lines += [f"Its reproduction test {shows}", ""]
    return [*lines, *fenced(winner.patch.rstrip(), "diff"), ""]


def _cost(summary: RunSummary) -> list[str]:
    lines = ["## Cost", "", f"- tokens: {summary.tokens:,}", f"- cost: {cost_text(summary)}"]
    if summary.unpriced:
        model = summary.unpriced[0]
        lines.append(
            f"  - price a model with -c 'prices.{model}=[input, output]' ($ per 1M tokens)"
        )
    lines.append(f"- wall time: {summary.duration_s:.1f} s")
    for stage, seconds in summary.timings_s.items():
        lines.append(f"  - {stage}: {seconds:.1f} s")
    return lines


def cost_text(summary: RunSummary) -> str:
    """The run's dollar cost; "unknown" where an API model had no price (its calls count
    nothing, so a bare "$0.0000" would be wrong)."""
    return dollars(summary.cost_usd, summary.unpriced)


def dollars(cost_usd: float, unpriced: Sequence[str], places: int = 4) -> str:
    """A dollar amount, or "unknown (no price for MODEL)" where `unpriced` API models were
    called: the one wording of the report, the CLI and the eval report."""
    if not unpriced:
        return f"${cost_usd:,.{places}f}"
    unknown = f"unknown (no price for {', '.join(unpriced)})"
    return f"${cost_usd:,.{places}f} plus {unknown}" if cost_usd > 0 else unknown


def _speculation(spec: SpecStats | None) -> list[str]:
    if spec is None:
        return []
    lines = [
        "",
        "## Draft/target decoding",
        "",
        f"- output tokens: {spec.draft_tokens:,} by the draft, "
        f"{spec.target_tokens:,} by the target ({spec.draft_share:.0%} drafted)",
    ]
    if spec.mode == "step":
        lines.append(
            f"- steps: {spec.steps_scored:,} scored, {spec.steps_accepted:,} accepted, "
            f"{spec.steps_rejected:,} rejected (realized rate {spec.rejection_rate:.3f}"
            f" at alpha {spec.alpha}), {spec.resamples:,} resampled"
        )
    if spec.drafted:
        lines.append(
            f"- token-level: {spec.accepted:,} of {spec.drafted:,} drafts accepted "
            f"({spec.acceptance_rate:.1%}) in {spec.rounds:,} rounds"
        )
    return lines


def _cell(matrix: Matrix, candidate_id: str, test_id: str) -> str:
    if not matrix.has_cell(candidate_id, test_id):
        return "·"
    run = matrix.cell(candidate_id, test_id)
    if run is None:
        return "n/a"
    return "✅" if run.passes else ("❌" if run.reproduces else f"💥{run.exit_code}")


def _original(matrix: Matrix, test_id: str) -> str:
    run = matrix.original.get(test_id)
    if run is None:
        return "·"
    return "❌" if run.reproduces else "✅" if run.passes else f"💥{run.exit_code}"


def vote_table(matrix: Matrix, winner_id: str | None) -> str:
    from harness.selectors.voting import changed_lines

    if not matrix.candidates:
        return "_No candidate patch survived filtering._\n"
    tests = list(matrix.tests)
    voters = set(matrix.voters())
    header = (
        "| candidate | votes | lines | "
        + " | ".join(f"{t}{'' if t in voters else ' (no vote)'}" for t in tests)
        + " |"
    )
    rule = "|---|---:|---:|" + "---|" * len(tests)
    orig = "| *original code* | | | " + " | ".join(_original(matrix, t) for t in tests) + " |"
    rows = [header, rule, orig]
    for c in matrix.ranked():
        name = f"**{c.candidate_id}** 🏆" if c.candidate_id == winner_id else c.candidate_id
        dups = matrix.aliases(c.candidate_id)
        if dups:
            name += f" (= {', '.join(dups)})"
        rows.append(
            f"| {name} | {matrix.votes(c.candidate_id)} | {changed_lines(c.patch)} | "
            + " | ".join(_cell(matrix, c.candidate_id, t) for t in tests)
            + " |"
        )
    legend = (
        "\n✅ exit 0 (fixed) · ❌ exit 2 (issue present) · 💥 crashed · n/a patch did not "
        "apply · · not run. Tests that already pass on the original code do not vote "
        "(unless none fails there).\n"
    )
    return "\n".join(rows) + "\n" + legend
