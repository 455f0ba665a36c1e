"""Markdown the bot posts: the acknowledgement / progress comment, refusals, failure reports
and the pull request body. Hidden markers make re-delivered events recognisable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.bot.events import USAGE, SolveOptions
from harness.report import dollars
from harness.text import middle_truncate
from harness.types import CandidateResult, SolveResult

MAX_BODY = 60_000  # GitHub rejects bodies over 65,536 characters
MAX_SECTION = 15_000
MAX_ROWS = 40
MARKER = re.compile(r"<!-- harness-bot key=(?P<key>[A-Za-z0-9._:-]+) state=(?P<state>[a-z_]+) -->")


@dataclass(frozen=True)
class Links:
    """Where a reader finds the run: the Actions run page and the report's path."""

    run_url: str | None = None
    report_path: Path | None = None

    def markdown(self) -> str:
        parts = []
        if self.run_url:
            parts.append(f"[workflow run]({self.run_url})")
        if self.report_path is not None:
            parts.append(f"report: `{self.report_path}`")
        return " · ".join(parts)


def marker(key: str, state: str) -> str:
    return f"<!-- harness-bot key={key} state={state} -->"


def read_marker(body: str) -> tuple[str, str] | None:
    """(key, state) of the bot's hidden marker in `body`, if it has one."""
    match = MARKER.search(body)
    return (match["key"], match["state"]) if match else None


def _finish(body: str, key: str, state: str) -> str:
    return middle_truncate(body.rstrip(), MAX_BODY) + "\n\n" + marker(key, state) + "\n"


def progress(
    key: str,
    stage: Literal["solving", "pushing"],
    *,
    who: str,
    via: str,
    options: SolveOptions,
    links: Links,
) -> str:
    """The acknowledgement comment, edited as the run moves from stage to stage."""
    current = {"solving": 1, "pushing": 2}[stage]
    steps = [
        "acknowledged",
        f"solving ({options.describe()})",
        "pushing a branch and opening a pull request",
    ]
    lines = [f"**harness** is working on this issue, as @{who} asked via {via}.", ""]
    for i, step in enumerate(steps):
        lines.append(f"- [{'x' if i < current else ' '}] {step}{' ⏳' if i == current else ''}")
    if links.markdown():
        lines += ["", links.markdown()]
    return _finish("\n".join(lines), key, stage)


def opened(key: str, pr_number: int, *, links: Links, existed: bool) -> str:
    if existed:
        body = f"**harness**: a pull request for this issue is already open: #{pr_number}."
    else:
        body = f"**harness** opened #{pr_number} with a proposed fix."
    if existed:
        body += "\n\nClose it (or delete its branch) to have harness try again."
    if links.markdown():
        body += "\n\n" + links.markdown()
    return _finish(body, key, "done")


def refused(key: str, who: str, permission: str) -> str:
    body = (
        f"Thanks for the interest, @{who}! harness only runs when someone with {permission} "
        "access to this repository asks for it, so nothing was started. A maintainer can add "
        "the label or comment `/harness solve` to run it."
    )
    return _finish(body, key, "refused")


def invalid(key: str, who: str, problem: str) -> str:
    body = f"@{who} harness did not start: {problem}\n\nUsage: `{USAGE}`"
    return _finish(body, key, "invalid")


def failed(key: str, *, stage: str, error: str, links: Links) -> str:
    error = middle_truncate(error, 4000)
    body = f"**harness** failed while {stage}:\n\n{_fence(error)}\n{error}\n{_fence(error)}"
    if links.markdown():
        body += "\n\nDetails: " + links.markdown()
    return _finish(body, key, "failed")


def no_patch(key: str, result: SolveResult, *, links: Links) -> str:
    """What was tried when no fix came out, with the report's location."""
    why = result.message.strip() or (
        "the run ended with an error" if result.status == "error" else "no candidate patch"
    )
    lines = [f"**harness** could not find a fix for this issue: {why}", "", "What was tried:"]
    lines.append(f"- {_stats(result)}")
    if result.candidates:
        lines += ["", _votes(result.candidates)]
    if links.markdown():
        lines += ["", "Details: " + links.markdown()]
    return _finish("\n".join(lines), key, "no_patch")


def pull_body(
    key: str,
    *,
    issue_number: int,
    result: SolveResult,
    changed: list[str],
    test_path: str | None,
    links: Links,
) -> str:
    """Summary, the winner's reasoning, the vote table and the reproduction test."""
    files = ", ".join(f"`{p}`" for p in changed if p != test_path) or "none"
    winner = next((c for c in result.candidates if c.selected), None)
    summary = [
        f"Fixes #{issue_number}.",
        "",
        "## Summary",
        "",
        f"harness proposes this patch for #{issue_number}. Changed files: {files}.",
        f"- {_stats(result)}",
    ]
    if winner is not None:
        summary.append(
            f"- selected candidate `{_cell(winner.candidate.candidate_id)}` "
            f"with {winner.votes} vote(s)"
        )
    sections = ["\n".join(summary)]
    reasoning = result.reasoning.strip() or "(the selection gave no reasoning)"
    sections.append("## Why this patch\n\n" + middle_truncate(reasoning, MAX_SECTION))
    if result.candidates:
        sections.append("## Votes\n\n" + _votes(result.candidates))
    if test_path is not None and result.test is not None:
        content = middle_truncate(result.test.content.rstrip(), MAX_SECTION)
        sections.append(
            "## Reproduction test\n\n"
            f"Added `{test_path}`, which runs this script: it fails without the patch "
            "and passes with it.\n\n"
            f"{_fence(content)}python\n{content}\n{_fence(content)}"
        )
    else:
        sections.append(
            "## Reproduction test\n\nNone added: no generated test was verified to fail "
            "without the patch and pass with it."
        )
    footer = "---\nGenerated by harness."
    if links.markdown():
        footer += " " + links.markdown()
    sections.append(footer)
    return _finish("\n\n".join(sections), key, "pr")


def _stats(result: SolveResult) -> str:
    n = len(result.candidates)
    parts = [f"{n} candidate patch{'es' if n != 1 else ''}"]
    if result.tokens:
        parts.append(f"{result.tokens:,} tokens")
    if result.unpriced:  # an API model without a price: say so, never a made-up $0
        parts.append(f"cost {dollars(result.cost_usd, result.unpriced, places=2)}")
    elif result.cost_usd:
        parts.append(f"${result.cost_usd:.2f}")
    if result.duration_s:
        parts.append(f"{result.duration_s / 60:.1f} min")
    return ", ".join(parts)


def _votes(candidates: tuple[CandidateResult, ...]) -> str:
    rows = sorted(candidates, key=lambda c: (not c.selected, -c.votes))
    lines = ["| candidate | source | votes | selected |", "| --- | --- | ---: | :---: |"]
    for c in rows[:MAX_ROWS]:
        lines.append(
            f"| `{_cell(c.candidate.candidate_id)}` | {_cell(c.candidate.source) or '-'} "
            f"| {c.votes} | {'✅' if c.selected else ''} |"
        )
    if len(rows) > MAX_ROWS:
        lines.append(f"| … {len(rows) - MAX_ROWS} more | | | |")
    return "\n".join(lines)


def _fence(content: str) -> str:
    """A code fence longer than any backtick run inside `content`."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    return "`" * max(3, longest + 1)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")[:80]
