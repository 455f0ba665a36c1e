"""report.md: what was tried, the votes, the winner and why, tokens, cost, time per stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.store import write_text
from harness.text import middle_truncate
from harness.types import SolveResult, Task

if TYPE_CHECKING:
    from harness.selectors.selection_loop import Selection
    from harness.selectors.voting import Matrix


def _cell(matrix: Matrix, candidate_id: str, test_id: str) -> str:
    if not matrix.has_cell(candidate_id, test_id):
        return "·"
    run = matrix.cell(candidate_id, test_id)
    if run is None:
        return "n/a"
    return "✅" if run.passes else ("❌" if run.reproduces else f"💥{run.exit_code}")


def vote_table(matrix: Matrix, winner_id: str | None) -> str:
    tests = list(matrix.tests)
    if not matrix.candidates:
        return "_No candidate patch survived filtering._\n"
    voters = set(matrix.voters())
    header = (
        "| candidate | votes | lines | "
        + " | ".join(f"{t}{'' if t in voters else ' (no vote)'}" for t in tests)
        + " |"
    )
    rule = "|---|---:|---:|" + "---|" * len(tests)
    orig = (
        "| *original code* | | | "
        + " | ".join(
            (
                "❌"
                if matrix.original[t].reproduces
                else "✅"
                if matrix.original[t].passes
                else f"💥{matrix.original[t].exit_code}"
            )
            if t in matrix.original
            else "·"
            for t in tests
        )
        + " |"
    )
    rows = [header, rule, orig]
    from harness.selectors.voting import changed_lines

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


def write_report(
    run_dir: Path,
    task: Task,
    result: SolveResult,
    summary: dict[str, Any],
    matrix: Matrix,
    selection: Selection | None,
) -> None:
    lines = [f"# harness report: {task.task_id}", ""]
    verdict = {"patched": "a patch was selected", "no_patch": "no patch", "error": "error"}[
        result.status
    ]
    lines += [
        f"**Result:** {verdict}"
        + (
            f" — winner `{selection.winner.candidate_id}` (chosen by {selection.by})"
            if selection
            else ""
        ),
        "",
    ]
    if result.message:
        lines += [f"> {result.message}", ""]
    lines += [
        "## Issue",
        "",
        "```text",
        middle_truncate(task.issue.strip(), 3000),
        "```",
        "",
        f"Repository `{task.repo}` at `{task.base_commit[:12]}`.",
        "",
    ]
    lines += [
        "## What was tried",
        "",
        "| sample | status | testing turns | reproduced | editing turns | ended by | seconds |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for s in summary["samples"]:
        lines.append(
            f"| {s['sample_id']} | {s['status']} | {s['testing_turns']} | "
            f"{'yes' if s['reproduced'] else 'no'} | {s['editing_turns']} | "
            f"{s['editing_reason'] or '-'} | {s['seconds']} |"
        )
    errors = [s for s in summary["samples"] if s["message"]]
    for s in errors:
        lines.append(f"\n- `{s['sample_id']}`: {s['message']}")
    if matrix.dropped:
        lines += [
            "",
            "Dropped before voting: "
            + ", ".join(f"`{c}` ({why})" for c, why in sorted(matrix.dropped.items())),
        ]
    winner_id = selection.winner.candidate_id if selection else None
    lines += ["", "## Votes", "", vote_table(matrix, winner_id)]
    if selection is not None:
        lines += [
            "## The winner and why",
            "",
            f"`{winner_id}`, chosen by {selection.by}"
            + (f" after {selection.turns} selection turn(s)" if selection.turns else "")
            + ".",
            "",
            middle_truncate(selection.reasoning.strip(), 2000) or "-",
            "",
        ]
        if result.test is not None:
            lines += [
                "Its reproduction test "
                + (
                    "fails on the original code and passes with the patch."
                    if result.test_verified
                    else "does not demonstrate the fix on its own."
                ),
                "",
            ]
        lines += ["```diff", result.patch.rstrip(), "```", ""]
    lines += [
        "## Cost",
        "",
        f"- tokens: {result.tokens:,}",
        f"- cost: ${result.cost_usd:.4f}",
        f"- wall time: {result.duration_s:.1f} s",
    ]
    for stage, seconds in summary["timings_s"].items():
        lines.append(f"  - {stage}: {seconds:.1f} s")
    spec = summary.get("speculation")
    if spec:
        lines += ["", "## Draft/target decoding", ""]
        lines.append(
            f"- output tokens: {spec['draft_tokens']:,} by the draft, "
            f"{spec['target_tokens']:,} by the target ({spec['draft_share']:.0%} drafted)"
        )
        if spec["mode"] == "step":
            lines.append(
                f"- steps: {spec['steps_scored']:,} scored, {spec['steps_accepted']:,} accepted, "
                f"{spec['steps_rejected']:,} rejected (realized rate {spec['rejection_rate']:.3f}"
                f" at alpha {spec['alpha']}), {spec['resamples']:,} resampled"
            )
        if spec["drafted"]:
            lines.append(
                f"- token-level: {spec['accepted']:,} of {spec['drafted']:,} drafts accepted "
                f"({spec['acceptance_rate']:.1%}) in {spec['rounds']:,} rounds"
            )
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
