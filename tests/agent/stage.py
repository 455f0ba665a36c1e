"""Running one editing stage for real: a git repository made by the test, a real sandbox
backend, the real reproduction runner, and a scripted model with the backends' contract
(max_tokens cuts a reply and reports finish_reason "length")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from harness.agent.editing import EditingOutcome, run_editing
from harness.agent.repro import ReproRunner
from harness.agent.trajectory import Conversation, TrajectoryLog
from harness.llm.base import Sampling
from harness.llm.scripted import Script, ScriptedLLM
from harness.sandboxes import Sandbox, SandboxBackend, SandboxSpec
from harness.types import Task, TestScript


@dataclass
class StageRun:
    outcome: EditingOutcome
    llm: ScriptedLLM
    observations: list[str]  # the user messages the model saw after each of its replies


async def run_edit_stage(
    backend: SandboxBackend,
    repo: Path,
    commit: str,
    replies: Script,
    tmp_path: Path,
    *,
    test: str | None = None,
    max_tokens: int = 1024,
    max_turns: int = 4,
    after: list[Sandbox] | None = None,
) -> StageRun:
    """`after`, when given, receives the stage's sandbox (still open) for inspection; the
    caller then closes it."""
    llm = ScriptedLLM(replies)
    async with await backend.open(SandboxSpec(repo=repo, commit=commit)) as pristine:
        runner = ReproRunner(pristine, timeout=60, output_limit=4000, limit=asyncio.Semaphore(2))
        script = TestScript(test) if test else None
        original = await runner.on_original(script) if script else None
        conv = Conversation(
            llm,
            TrajectoryLog.open(tmp_path / "sample.jsonl", "sample-00"),
            "editing",
            "t:sample-00",
            Sampling(0.0, max_tokens=max_tokens),
            max_turns=max_turns,
        )
        box = await pristine.fork()
        try:
            task = Task("t", "issue", str(repo), commit)
            outcome = await run_editing(conv, runner, box, task, "", script, original)
        finally:
            if after is None:
                await box.close()
            else:
                after.append(box)
    observations = [
        m.content
        for m in conv.messages[2:]  # after the system prompt and the first user message
        if m.role == "user"
    ]
    return StageRun(outcome, llm, observations)
