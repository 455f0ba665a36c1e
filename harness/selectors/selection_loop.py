"""The selection loop: the model sees the issue, the touched files and the top-k diffs; each
turn it writes a discriminating test (run on the original and on every candidate) or names
the winner. Invalid answers, or no answer within the turn limit, fall back to the vote winner.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from harness.agent.actions import Malformed, parse_action
from harness.agent.render import render
from harness.agent.repro import ReproRunner, TestRun
from harness.agent.testing import truncated_test_message
from harness.agent.trajectory import Conversation
from harness.sandboxes import Sandbox
from harness.text import middle_truncate
from harness.types import Candidate, TestScript

STAGE = "selection"
_FILES = re.compile(r"^\+\+\+ b/(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Selection:
    winner: Candidate
    reasoning: str
    by: str  # "model" | "votes" | "only-candidate"
    turns: int


def _choice(body: str, count: int) -> int | None:
    match = re.search(r"\d+", body)
    if match is None:
        return None
    number = int(match.group())
    return number if 1 <= number <= count else None


async def touched_files(pristine: Sandbox, candidates: list[Candidate], limit: int) -> str:
    paths = sorted({p for c in candidates for p in _FILES.findall(c.patch)})
    parts = []
    for path in paths:
        try:
            content = await pristine.read_file(path)
        except Exception:  # a file the candidates create: nothing to show
            continue
        parts.append(f'<file path="{path}">\n{middle_truncate(content, limit)}\n</file>')
    return "\n".join(parts)


async def select(
    conv: Conversation,
    runner: ReproRunner,
    issue: str,
    ranked: list[Candidate],
    votes: dict[str, int],
    files: str,
) -> Selection:
    """Pick a winner among `ranked` (best vote first)."""
    if len(ranked) == 1:
        return Selection(ranked[0], "the only candidate left after voting", "only-candidate", 0)
    fallback = Selection(
        ranked[0], f"most votes ({votes.get(ranked[0].candidate_id, 0)})", "votes", conv.turn
    )
    checkpoint = conv.log.checkpoints.get(STAGE)
    if checkpoint is not None:
        conv.restore(checkpoint["state"])
    if not conv.messages:
        conv.add("system", render("selection_system"))
        conv.add(
            "user",
            render(
                "selection_user",
                issue=issue,
                files=files,
                candidates=[
                    {"patch": c.patch, "votes": votes.get(c.candidate_id, 0)} for c in ranked
                ],
            ),
        )
    while conv.turn < conv.max_turns:
        reply = await conv.ask(next_tool="run_selection_test")
        action = parse_action(reply, ("test", "choose"))
        cut = conv.cut_note() if conv.cut else None
        if isinstance(action, Malformed):
            conv.add("user", f"{cut}: {action.message}" if cut else action.message)
        elif action.kind == "test" and cut and not action.closed:
            conv.add("user", truncated_test_message(cut))  # half a script decides nothing
        elif action.kind == "choose":
            number = _choice(action.body, len(ranked))
            if number is not None:
                reasoning = reply.split("</choose>", 1)[-1].strip() or reply.strip()
                conv.log.record("checkpoint", STAGE, turn=conv.turn, state=conv.state())
                return Selection(ranked[number - 1], reasoning, "model", conv.turn)
            conv.add("user", f"Name one candidate by its number, 1 to {len(ranked)}.")
        else:
            conv.add("user", await _compare(conv, runner, TestScript(action.body), ranked))
        conv.log.record("checkpoint", STAGE, turn=conv.turn, state=conv.state())
    return Selection(
        fallback.winner, fallback.reasoning + "; the selection loop named none", "votes", conv.turn
    )


async def _compare(
    conv: Conversation, runner: ReproRunner, test: TestScript, ranked: list[Candidate]
) -> str:
    recorded = conv.log.replayed(STAGE, conv.turn, "exec", "compare")
    if recorded is not None:
        return str(recorded["result"])
    original = await runner.on_original(test)
    results = await asyncio.gather(*(runner.on_patch(c.patch, [test]) for c in ranked))
    lines = [_line("original code", original)]
    for number, runs in enumerate(results, 1):
        lines.append(
            _line(f"candidate {number}", runs[0])
            if runs
            else f"candidate {number}: the patch does not apply"
        )
    text = "\n".join(lines)
    conv.log.record("exec", STAGE, turn=conv.turn, what="compare", result=text)
    return text


def _line(label: str, run: TestRun) -> str:
    output = middle_truncate(run.output.strip(), 1500) or "(no output)"
    return f"{label}: exit code {run.exit_code} ({run.meaning})\n{output}\n"
