"""The editing stage: seeded with the sample's test, the model proposes search/replace edits;
after each, the test runs on the original and on the edited code and the model sees both.
It may also rewrite the test, or say it is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.agent.actions import Malformed, parse_action
from harness.agent.edits import EditError, apply_blocks, parse_edit_blocks
from harness.agent.render import render
from harness.agent.repro import ReproRunner, TestRun
from harness.agent.testing import result_text
from harness.agent.trajectory import Conversation
from harness.errors import SandboxError
from harness.sandboxes import Sandbox
from harness.types import Task, TestScript

STAGE = "editing"


@dataclass(frozen=True)
class EditingOutcome:
    patch: str
    test: TestScript | None
    patched: TestRun | None  # the final test's run on the final patch
    turns: int
    reason: str  # "done" | "max_turns"
    original: TestRun | None = None  # the final test's run on the original code


def _advice(original: TestRun | None, patched: TestRun | None) -> str:
    if patched is None:
        return "Propose an edit."
    if patched.passes and original is not None and original.reproduces:
        return "The script passes on your edited code. Reply <done/> if the fix is complete."
    if patched.passes:
        return (
            "The script passes on your edited code, but it did not fail on the original, so "
            "it proves little: consider a better <test>, or <done/>."
        )
    return (
        "The issue is not fixed yet on your edited code. Send another <edit> (or a better <test>)."
    )


async def apply_edit(box: Sandbox, reply_body: str) -> str | None:
    """Apply the edit blocks in `reply_body` to `box`; return an error message, or None."""
    try:
        blocks = parse_edit_blocks(reply_body)
        files: dict[str, str | None] = {}
        for block in blocks:
            if block.path not in files:
                try:
                    files[block.path] = await box.read_file(block.path)
                except SandboxError:
                    files[block.path] = None
        new = apply_blocks(blocks, files)
    except EditError as exc:
        return f"Your edit was not applied: {exc}"
    for path, content in new.items():
        await box.write_file(path, content)
    return None


async def run_editing(
    conv: Conversation,
    runner: ReproRunner,
    box: Sandbox,
    task: Task,
    context: str,
    test: TestScript | None,
    original: TestRun | None,
) -> EditingOutcome:
    """`box` is a fresh sandbox at the base commit (a checkpoint's patch is re-applied here)."""
    patched: TestRun | None = None
    checkpoint = conv.log.checkpoints.get(STAGE)
    if checkpoint is not None:
        state = checkpoint["state"]
        conv.restore(state)
        test = TestScript(state["test"]) if state.get("test") else None
        if state.get("patch"):
            restored = await box.apply_patch(state["patch"])
            if not restored.applied:
                raise SandboxError(f"cannot restore the checkpoint's patch: {restored.reason}")
    if not conv.messages:
        intro = (
            result_text([("original", original)], "")
            if original
            else ("No working reproduction script exists yet; you may write one with <test>.")
        )
        conv.add("system", render("editing_system", workdir=box.workdir))
        conv.add(
            "user",
            render(
                "editing_user",
                issue=task.issue,
                context=context,
                test=test.content if test else "(none)",
                result=intro,
            ),
        )
    reason = "max_turns"
    while conv.turn < conv.max_turns:
        reply = await conv.ask(next_tool="edit_and_test")
        action = parse_action(reply, ("edit", "test", "done"))
        if isinstance(action, Malformed):
            conv.add("user", action.message)
        elif action.kind == "done":
            reason = "done"
            await _checkpoint(conv, box, test)
            break
        else:
            if action.kind == "edit":
                error = await apply_edit(box, action.body)
                if error is not None:
                    conv.add("user", error)
                    await _checkpoint(conv, box, test)
                    continue
            else:
                test = TestScript(action.body)
            if test is None:
                conv.add(
                    "user",
                    "Edit applied. There is no reproduction script to run; "
                    "write one with <test> or reply <done/>.",
                )
            else:
                original = await _run(conv, runner, test, None, "original")
                patched = await _run(conv, runner, test, box, "patched")
                conv.add(
                    "user",
                    result_text(
                        [("original", original), ("edited", patched)], _advice(original, patched)
                    ),
                )
        await _checkpoint(conv, box, test)
    patch = await box.diff()
    conv.log.record(
        "outcome",
        STAGE,
        turns=conv.turn,
        reason=reason,
        patch=patch,
        test=test.content if test else None,
        patched=patched.to_json() if patched else None,
        original=original.to_json() if original and test else None,
    )
    return EditingOutcome(patch, test, patched, conv.turn, reason, original if test else None)


def restored_editing(event: dict[str, Any]) -> EditingOutcome:
    """The outcome of an editing stage that a previous run finished."""
    test = TestScript(event["test"]) if event.get("test") else None
    patched = TestRun.from_json(event["patched"]) if event.get("patched") else None
    original = TestRun.from_json(event["original"]) if event.get("original") else None
    return EditingOutcome(
        str(event["patch"]), test, patched, int(event["turns"]), str(event["reason"]), original
    )


async def _run(
    conv: Conversation, runner: ReproRunner, test: TestScript, box: Sandbox | None, what: str
) -> TestRun:
    recorded = conv.log.replayed(conv.stage, conv.turn, "exec", what)
    if recorded is not None:
        run = TestRun.from_json(recorded["result"])
        if box is None:
            runner.remember_original(test, run)
        return run
    run = await (runner.on_original(test) if box is None else runner.run_in(box, test))
    conv.log.record("exec", conv.stage, turn=conv.turn, what=what, result=run.to_json())
    return run


async def _checkpoint(conv: Conversation, box: Sandbox, test: TestScript | None) -> None:
    state = conv.state()
    state["test"] = test.content if test else None
    state["patch"] = await box.diff()
    conv.log.record("checkpoint", conv.stage, turn=conv.turn, state=state)
