"""The testing stage: the model writes a reproduction script, sees it run on the original
code, and revises it until it reproduces the issue (exit 2) or says it is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.agent.actions import Malformed, parse_action
from harness.agent.render import render
from harness.agent.repro import ReproRunner, TestRun
from harness.agent.trajectory import Conversation
from harness.types import Task, TestScript

STAGE = "testing"


@dataclass(frozen=True)
class TestingOutcome:
    test: TestScript | None
    original: TestRun | None  # the final script's run on the original code
    turns: int
    reason: str  # "done" | "max_turns"

    @property
    def reproduced(self) -> bool:
        return self.original is not None and self.original.reproduces


def advice_for(run: TestRun) -> str:
    if run.reproduces:
        return (
            "The script reproduces the issue. Reply <done/> if it checks the behaviour the "
            "issue asks for, or send an improved <test>."
        )
    if run.passes:
        return (
            "The script exits 0 on the original code, so it does not reproduce the issue "
            "yet. Send a revised <test> that exits 2 while the issue is present."
        )
    return "The script crashed or timed out. Send a fixed <test>."


def result_text(runs: list[tuple[str, TestRun]], advice: str) -> str:
    return render(
        "test_result",
        advice=advice,
        runs=[
            {
                "label": label,
                "exit_code": run.exit_code,
                "timed_out": run.timed_out,
                "meaning": run.meaning,
                "output": run.output.strip() or "(no output)",
            }
            for label, run in runs
        ],
    )


def truncated_test_message(cut: str) -> str:
    return (
        f"{cut} inside <test>, so the script is incomplete and was not run. Send a shorter "
        "complete script in <test></test>."
    )


async def run_testing(
    conv: Conversation, runner: ReproRunner, task: Task, context: str, workdir: str
) -> TestingOutcome:
    test: TestScript | None = None
    original: TestRun | None = None
    checkpoint = conv.log.checkpoints.get(STAGE)
    if checkpoint is not None:
        state = checkpoint["state"]
        conv.restore(state)
        if state.get("test") is not None:
            test = TestScript(state["test"])
            original = TestRun.from_json(state["original"])
            runner.remember_original(test, original)
    if not conv.messages:
        conv.add("system", render("testing_system", workdir=workdir))
        conv.add("user", render("testing_user", issue=task.issue, context=context))
    reason = "max_turns"
    while conv.turn < conv.max_turns:
        reply = await conv.ask(next_tool="run_test")
        action = parse_action(reply, ("test", "done"))
        cut = conv.cut_note() if conv.cut else None
        if isinstance(action, Malformed):
            conv.add("user", f"{cut}: {action.message}" if cut else action.message)
        elif action.kind == "test" and cut and not action.closed:
            conv.add("user", truncated_test_message(cut))
        elif action.kind == "done" and test is not None:
            reason = "done"
            _checkpoint(conv, test, original)
            break
        elif action.kind == "done":
            conv.add("user", "There is no script yet. Send one in <test></test> first.")
        else:
            test = TestScript(action.body)
            original = await _run_original(conv, runner, test)
            conv.add("user", result_text([("original", original)], advice_for(original)))
        _checkpoint(conv, test, original)
    outcome = TestingOutcome(test, original, conv.turn, reason)
    conv.log.record(
        "outcome",
        STAGE,
        turns=conv.turn,
        reason=reason,
        test=test.content if test else None,
        original=original.to_json() if original else None,
    )
    return outcome


async def _run_original(conv: Conversation, runner: ReproRunner, test: TestScript) -> TestRun:
    recorded = conv.log.replayed(conv.stage, conv.turn, "exec", "original")
    if recorded is not None:
        run = TestRun.from_json(recorded["result"])
        runner.remember_original(test, run)
        return run
    run = await runner.on_original(test)
    conv.log.record("exec", conv.stage, turn=conv.turn, what="original", result=run.to_json())
    return run


def _checkpoint(conv: Conversation, test: TestScript | None, original: TestRun | None) -> None:
    state = conv.state()
    state["test"] = test.content if test else None
    state["original"] = original.to_json() if original else None
    conv.log.record("checkpoint", conv.stage, turn=conv.turn, state=state)


def restored_outcome(event: dict[str, object]) -> TestingOutcome:
    """The outcome of a testing stage that a previous run finished."""
    test = event.get("test")
    original = event.get("original")
    return TestingOutcome(
        TestScript(str(test)) if test else None,
        TestRun.from_json(original) if isinstance(original, dict) else None,
        int(event.get("turns", 0)),  # type: ignore[call-overload]
        str(event.get("reason", "")),
    )
