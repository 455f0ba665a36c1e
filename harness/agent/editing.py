"""The editing stage: seeded with the sample's test, the model proposes search/replace edits;
after each, the test runs on the original and on the edited code and the model sees both.
It may also rewrite the test, or say it is done.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from harness.agent.actions import Malformed, parse_action
from harness.agent.edits import EditError, apply_blocks, parse_edit
from harness.agent.render import render
from harness.agent.repro import ReproRunner, TestRun
from harness.agent.testing import result_text, truncated_test_message
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


@dataclass(frozen=True)
class EditResult:
    """What one <edit> did: the blocks applied and the files they wrote, or why not."""

    applied: int = 0  # complete blocks applied (all of them, or none)
    files: tuple[str, ...] = ()
    error: str | None = None  # nothing was applied, and why
    unfinished: str | None = None  # a last block that never reached >>>>>>> REPLACE


async def apply_edit(box: Sandbox, reply_body: str) -> EditResult:
    """Apply the edit blocks in `reply_body` to `box`: every complete block or none of them.

    A path that leads outside the work tree (through a symbolic link) or into .git, and a
    write the sandbox refuses, are reported, never raised: they are the model's mistakes."""
    try:
        parsed = parse_edit(reply_body)
        if not parsed.blocks:
            return EditResult(error=parsed.unfinished)
        real = await _real_paths(box, sorted({b.path for b in parsed.blocks}))
        blocks = []
        for number, block in enumerate(parsed.blocks, 1):
            path = real.get(block.path, block.path)
            if path is None:
                raise EditError(
                    f"block {number} ({block.path}): the path leads outside the repository "
                    "(through a symbolic link) or into .git; edit files inside the repository"
                )
            blocks.append(replace(block, path=path))
        files: dict[str, str | None] = {}
        for block in blocks:
            if block.path not in files:
                try:
                    files[block.path] = await box.read_file(block.path)
                except SandboxError:
                    files[block.path] = None
        new = apply_blocks(blocks, files)
    except EditError as exc:
        return EditResult(error=str(exc), unfinished=None)
    written: list[str] = []
    for path, content in new.items():
        try:
            await box.write_file(path, content)
        except SandboxError as exc:
            await _undo(box, written, files)
            return EditResult(error=f"the sandbox refused to write {path} ({exc})")
        written.append(path)
    await _drop_bytecode(box, written)
    return EditResult(len(blocks), tuple(written), None, parsed.unfinished)


async def _drop_bytecode(box: Sandbox, paths: list[str]) -> None:
    """Remove the cached bytecode of edited modules: Python trusts a .pyc whose recorded
    source mtime (whole seconds) and size match, so an edit that keeps a file's size within
    a second of the last run would otherwise run the old code."""
    modules = [p for p in paths if p.endswith(".py")]
    if modules:
        script = (
            'for f in "$@"; do d=$(dirname -- "$f"); b=$(basename -- "$f" .py); '
            'rm -f -- "$d/__pycache__/$b".*.pyc; done'
        )
        await box.exec(["sh", "-c", script, "sh", *modules], timeout=60)


async def _real_paths(box: Sandbox, paths: list[str]) -> dict[str, str | None]:
    """Each path as the work tree resolves it (symbolic links followed), relative to its
    root; None when it leaves the work tree or points into .git. Best effort: without
    `realpath` in the sandbox the paths stay as given (a refused write is still reported)."""
    res = await box.exec(["realpath", "-m", "--", ".", *paths], timeout=60)
    lines = res.stdout.split("\n")[: len(paths) + 1]
    if not res.ok or len(lines) != len(paths) + 1:
        return {}
    root, resolved = lines[0], lines[1:]
    out: dict[str, str | None] = {}
    for path, real in zip(paths, resolved, strict=True):
        inside = real.startswith(root.rstrip("/") + "/")
        rel = real[len(root.rstrip("/")) + 1 :] if inside else ""
        out[path] = rel if rel and rel.split("/")[0] != ".git" else None
    return out


async def _undo(box: Sandbox, written: list[str], files: dict[str, str | None]) -> None:
    """Put back the files an edit wrote before a later write was refused."""
    for path in written:
        old = files.get(path)
        try:
            if old is None:
                await box.exec(["rm", "-f", "--", path], timeout=60)
            else:
                await box.write_file(path, old)
        except SandboxError:
            continue


def edit_note(result: EditResult, cut: str | None, closed: bool) -> str:
    """What the model is told about its edit beyond the test run ("" when all is well).
    `cut` is the cut-off note when the reply stopped at the token limit."""
    lead = f"{cut}: " if cut else ""
    if result.error is not None:
        advice = (
            " Send a shorter edit (fewer lines of context, fewer blocks per reply)." if cut else ""
        )
        reason = result.error.rstrip(". ")
        return _sentence(f"{lead}your edit was not applied: {reason}.{advice}")
    applied = f"block{'s' if result.applied > 1 else ''} 1" + (
        f"-{result.applied}" if result.applied > 1 else ""
    )
    done = (
        f"{applied} {'were' if result.applied > 1 else 'was'} applied ({', '.join(result.files)})"
    )
    if result.unfinished is not None:
        return _sentence(
            f"{lead}{result.unfinished} and was not applied; {done}. Send the missing "
            "block(s) in a new <edit>."
        )
    if cut and not closed:
        return _sentence(
            f"{lead}the reply ended after a complete block; {done}. If you meant to send "
            "more blocks, send them in a new <edit>."
        )
    return ""


def _joined(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass
class _Progress:
    """What the stage knows so far: its script and that script's latest runs."""

    test: TestScript | None
    original: TestRun | None  # the script's run on the original code
    patched: TestRun | None = None  # ... and on the edited code


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
    progress = _Progress(test, original)
    await _restore(conv, box, progress)
    if not conv.messages:
        _start(conv, box, task, context, progress)
    reason = "max_turns"
    while conv.turn < conv.max_turns:
        reply = await conv.ask(next_tool="edit_and_test")
        done = await _turn(conv, runner, box, progress, reply)
        await _checkpoint(conv, box, progress.test)
        if done:
            reason = "done"
            break
    return await _outcome(conv, box, progress, reason)


async def _restore(conv: Conversation, box: Sandbox, progress: _Progress) -> None:
    """Continue from the stage's last checkpoint, if a run before left one."""
    checkpoint = conv.log.checkpoints.get(STAGE)
    if checkpoint is None:
        return
    state = checkpoint["state"]
    conv.restore(state)
    progress.test = TestScript(state["test"]) if state.get("test") else None
    if state.get("patch"):
        restored = await box.apply_patch(state["patch"])
        if not restored.applied:
            raise SandboxError(f"cannot restore the checkpoint's patch: {restored.reason}")


def _start(conv: Conversation, box: Sandbox, task: Task, context: str, progress: _Progress) -> None:
    intro = (
        result_text([("original", progress.original)], "")
        if progress.original
        else "No working reproduction script exists yet; you may write one with <test>."
    )
    conv.add("system", render("editing_system", workdir=box.workdir))
    conv.add(
        "user",
        render(
            "editing_user",
            issue=task.issue,
            context=context,
            test=progress.test.content if progress.test else "(none)",
            result=intro,
        ),
    )


async def _turn(
    conv: Conversation, runner: ReproRunner, box: Sandbox, progress: _Progress, reply: str
) -> bool:
    """Act on one reply and tell the model what came of it; True when it says it is done."""
    action = parse_action(reply, ("edit", "test", "done"))
    cut = conv.cut_note() if conv.cut else None
    if isinstance(action, Malformed):
        conv.add("user", f"{cut}: {action.message}" if cut else action.message)
    elif action.kind == "done":
        return True
    elif action.kind == "test" and cut and not action.closed:
        conv.add("user", truncated_test_message(cut))
    elif action.kind == "edit":
        edit = await apply_edit(box, action.body)
        note = edit_note(edit, cut, action.closed)
        if edit.error is not None:
            conv.add("user", note)
        else:
            await _run_script(conv, runner, box, progress, note)
    else:
        progress.test = TestScript(action.body)
        await _run_script(conv, runner, box, progress, "")
    return False


async def _run_script(
    conv: Conversation, runner: ReproRunner, box: Sandbox, progress: _Progress, note: str
) -> None:
    """Run the script on the original and the edited code and show the model both."""
    if progress.test is None:
        conv.add(
            "user",
            _joined(
                note,
                "Edit applied. There is no reproduction script to run; "
                "write one with <test> or reply <done/>.",
            ),
        )
        return
    progress.original = await _run(conv, runner, progress.test, None, "original")
    progress.patched = await _run(conv, runner, progress.test, box, "patched")
    runs = [("original", progress.original), ("edited", progress.patched)]
    conv.add("user", _joined(note, result_text(runs, _advice(progress.original, progress.patched))))


async def _outcome(
    conv: Conversation, box: Sandbox, progress: _Progress, reason: str
) -> EditingOutcome:
    test, patched = progress.test, progress.patched
    original = progress.original if test else None
    patch = await box.diff()
    conv.log.record(
        "outcome",
        STAGE,
        turns=conv.turn,
        reason=reason,
        patch=patch,
        test=test.content if test else None,
        patched=patched.to_json() if patched else None,
        original=original.to_json() if original else None,
    )
    return EditingOutcome(patch, test, patched, conv.turn, reason, original)


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
