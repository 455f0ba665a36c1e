"""An oracle model for real SWE-bench instances: every stage of a solve answered the way a
capable model would, from the data set's hidden answers.

Context: the files the gold patch touches are relevant (and ranked first). Testing: a
reproduction script built from the hidden tests (it applies the test patch, runs the
FAIL_TO_PASS tests with pytest, or calls them for sympy's plain test functions, and takes the
patch back off). Editing: the gold patch as search/replace blocks, except sample-01, which
writes a decoy (a comment, no fix) so that voting and selection have a choice. Selection:
the candidate carrying the gold patch's lines.

Benchmarks only: no model spec of the CLI reaches it. `real_pipeline.py` writes the answers
(`Answer.to_json`) to a file and runs `harness eval run --solver benchmarks.real_oracle:solver`
with ORACLE_ANSWERS naming that file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.llm.base import ChatRequest

ANSWERS_ENV = "ORACLE_ANSWERS"
MAX_TOKENS = 16384
# What the edit format takes for a block marker (agent/edits.py): such a line inside a block
# would split it, so blocks keep them out of their edges or the instance is not expressible.
_MARKER = re.compile(r"(={5,9}[ \t]*$)|(<{5,9} ?SEARCH)|(>{5,9} ?REPLACE)")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")


class NotExpressible(ValueError):
    """The gold patch cannot be written as edit blocks (deletions, marker-like lines)."""


@dataclass(frozen=True)
class Answer:
    instance_id: str
    files: tuple[str, ...]  # what the gold patch touches
    edit: str  # the gold patch as edit blocks
    decoy: str  # a block that changes a comment only
    script: str  # the reproduction script
    added: tuple[str, ...]  # the gold patch's added lines, to recognise its candidate

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        return cls(
            str(data["instance_id"]),
            tuple(data["files"]),
            str(data["edit"]),
            str(data["decoy"]),
            str(data["script"]),
            tuple(data["added"]),
        )


def file_diffs(patch: str) -> list[tuple[str, str, list[str]]]:
    """(old path, new path, hunk lines) per file of a git diff."""
    out: list[tuple[str, str, list[str]]] = []
    for chunk in re.split(r"^diff --git ", patch, flags=re.MULTILINE)[1:]:
        lines = chunk.splitlines()
        old = new = ""
        body: list[str] = []
        for i, line in enumerate(lines):
            if line.startswith("--- "):
                old = line[4:].split("\t")[0]
            elif line.startswith("+++ "):
                new = line[4:].split("\t")[0]
                body = lines[i + 1 :]
                break
        out.append((old.removeprefix("a/"), new.removeprefix("b/"), body))
    return out


def edit_blocks(patch: str, originals: Mapping[str, str]) -> str:
    """The patch as search/replace blocks against `originals` (path -> content at base);
    each SEARCH is the hunk's old text, widened with more of the file until it is unique."""
    blocks: list[str] = []
    for old, new, body in file_diffs(patch):
        if new == "/dev/null":
            raise NotExpressible(f"the patch deletes {old}")
        if old == "/dev/null":
            added = [line[1:] for line in body if line.startswith("+")]
            blocks.append(_block(new, [], added))
            continue
        content = originals[old].splitlines()
        for start, hunk in _hunks(body):
            before = [ln[1:] for ln in hunk if ln[:1] in (" ", "-")]
            after = [ln[1:] for ln in hunk if ln[:1] in (" ", "+")]
            before, after = _trim_markers(before, after)
            lo = start - 1 + _leading_trimmed(hunk, before)
            before, after = _unique(content, lo, before, after)
            blocks.append(_block(new, before, after))
    return "".join(blocks)


def decoy_block(patch: str, originals: Mapping[str, str]) -> str:
    """A wrong fix: the first hunk's old text with a comment line put before it."""
    for old, new, body in file_diffs(patch):
        if old == "/dev/null" or new == "/dev/null":
            continue
        content = originals[old].splitlines()
        for start, hunk in _hunks(body):
            before = [ln[1:] for ln in hunk if ln[:1] in (" ", "-")]
            before, _ = _trim_markers(before, before)
            lo = start - 1 + _leading_trimmed(hunk, before)
            before, _ = _unique(content, lo, before, before)
            first = next((b for b in before if b.strip()), "")
            indent = first[: len(first) - len(first.lstrip())]
            return _block(new, before, [f"{indent}# Handle the case from the issue.", *before])
    raise NotExpressible("no hunk to put a decoy in")


def reproduction_script(test_patch: str, fail_to_pass: list[str]) -> str:
    """A standalone script: exit 0 when the hidden FAIL_TO_PASS tests pass, 2 when one
    fails (the issue is present), 1 when it cannot run them."""
    functions = not any("::" in t for t in fail_to_pass)
    files = [new for _, new, _ in file_diffs(test_patch) if new.endswith(".py")]
    return SCRIPT.format(
        patch=repr(test_patch if test_patch.endswith("\n") else test_patch + "\n"),
        tests=repr(list(fail_to_pass)),
        files=repr(files),
        mode=repr("functions" if functions else "pytest"),
    )


SCRIPT = """\
# Reproduces the issue with the hidden tests: applies them, runs them, takes them off again.
import importlib, os, subprocess, sys, tempfile, traceback

TEST_PATCH = {patch}
TESTS = {tests}
FILES = {files}
MODE = {mode}
GIT = ["git", "-c", "core.hooksPath=/dev/null", "-c", "safe.directory=*"]


def git_apply(path, *flags):
    return subprocess.run(GIT + ["apply", *flags, path], capture_output=True).returncode == 0


def run_pytest():
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *TESTS]
    rc = subprocess.run(cmd).returncode
    return 0 if rc == 0 else 2 if rc in (1, 2) else 1


def run_functions():
    failed = []
    found = set()
    for path in FILES:
        name = path[:-3].replace("/", ".")
        try:
            module = importlib.import_module(name)
        except Exception:
            traceback.print_exc()
            return 2  # the hidden tests need what the fix adds
        for test in TESTS:
            fn = getattr(module, test, None)
            if fn is None:
                continue
            found.add(test)
            try:
                fn()
                print("PASSED", test)
            except Exception:
                traceback.print_exc()
                print("FAILED", test)
                failed.append(test)
    missing = [t for t in TESTS if t not in found]
    if missing:
        print("not found:", missing)
        return 1
    return 2 if failed else 0


def main():
    fd, path = tempfile.mkstemp(suffix=".patch")
    with os.fdopen(fd, "w") as fh:
        fh.write(TEST_PATCH)
    applied = git_apply(path, "--check") and git_apply(path)
    if not applied and not git_apply(path, "-R", "--check"):
        print("the hidden tests do not apply here")
        return 1
    try:
        return run_functions() if MODE == "functions" else run_pytest()
    finally:
        if applied:
            git_apply(path, "-R")
        os.unlink(path)


sys.exit(main())
"""


def answer_for(record: Mapping[str, Any], originals: Mapping[str, str]) -> Answer:
    """The oracle's answers for one data-set record; `originals` holds the base-commit
    content of every file the gold patch changes."""
    patch = str(record["patch"])
    f2p = record["FAIL_TO_PASS"]
    tests = json.loads(f2p) if isinstance(f2p, str) else list(f2p)
    files = tuple(new for _, new, _ in file_diffs(patch))
    added = tuple(
        ln[1:].strip()
        for _, _, body in file_diffs(patch)
        for ln in body
        if ln.startswith("+") and ln[1:].strip()
    )
    return Answer(
        str(record["instance_id"]),
        files,
        edit_blocks(patch, originals),
        decoy_block(patch, originals),
        reproduction_script(str(record["test_patch"]), tests),
        added,
    )


class Oracle:
    """The responder: `ScriptedLLM(Oracle(answers))` plays every role of a solve."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = dict(answers)

    def _answer(self, request: ChatRequest) -> Answer:
        # Program ids start with the task id: "<id>:sample-00", "<id>:selection", "<id>/ctx..."
        pid = request.program_id or ""
        for ident in sorted(self.answers, key=len, reverse=True):
            if pid.startswith(ident):
                return self.answers[ident]
        raise KeyError(f"the oracle has no answers for program {pid!r}")

    def __call__(self, request: ChatRequest) -> str:
        answer = self._answer(request)
        system = request.messages[0].content if request.messages else ""
        turns = sum(1 for m in request.messages if m.role == "assistant")
        last = request.messages[-1].content
        if "Would a developer need to read or change" in last:
            hit = any(path in last for path in answer.files)
            return "RELEVANT: the fix changes it." if hit else "IRRELEVANT."
        if "Order these files" in last:
            return "\n".join(answer.files) + "\n"
        if "reproduces a reported issue" in system:  # testing
            return f"<test>\n{answer.script}</test>" if turns == 0 else "<done/>"
        if "fixing an issue" in system:  # editing
            if turns:
                return "<done/>"
            decoy = (request.program_id or "").endswith("sample-01")
            return f"<edit>\n{answer.decoy if decoy else answer.edit}</edit>"
        if "choosing the best of several candidate patches" in system:
            return self._choose(
                answer, request.messages[1].content if len(request.messages) > 1 else ""
            )
        return "<done/>"

    def _choose(self, answer: Answer, listing: str) -> str:
        parts = listing.split("<candidate number=")[1:]
        scores = [sum(1 for line in answer.added if line in part) for part in parts]
        best = max(range(len(scores)), key=lambda i: scores[i]) + 1 if scores else 1
        return f"<choose>{best}</choose> Candidate {best} makes the change the issue needs."


def load_answers(path: Path) -> dict[str, Answer]:
    data = json.loads(path.read_text())
    return {a["instance_id"]: Answer.from_json(a) for a in data}


def solver() -> Any:
    """`--solver benchmarks.real_oracle:solver`: the harness pipeline on the oracle."""
    from harness.config import load_config
    from harness.llm.model_store import ModelStore
    from harness.llm.scripted import ScriptedLLM
    from harness.solver import PipelineSolver

    path = os.environ.get(ANSWERS_ENV)
    if not path:
        raise RuntimeError(f"set {ANSWERS_ENV} to the answers file real_pipeline.py writes")
    cache = Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "harness")
    samples = os.environ.get("ORACLE_SAMPLES", "3")
    # Room for a whole reproduction script and patch in one reply (the default 1024 tokens
    # cuts a script that carries real hidden tests, and a cut script exits 0 silently).
    config = load_config(
        None,
        [
            f"samples={samples}",
            "model=oracle",
            f"testing.max_tokens={MAX_TOKENS}",
            f"editing.max_tokens={MAX_TOKENS}",
        ],
    )
    llm = ScriptedLLM(Oracle(load_answers(Path(path))), name="oracle")
    return PipelineSolver(config, cache_dir=cache, store=ModelStore(cache / "models"), llm=llm)


def _hunks(body: list[str]) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    for line in body:
        if m := _HUNK.match(line):
            out.append((int(m.group(1)), []))
        elif out and line[:1] in (" ", "-", "+"):
            out[-1][1].append(line)
        elif out and line == "":
            out[-1][1].append(" ")  # a blank context line some tools strip to ""
    return out


def _trim_markers(before: list[str], after: list[str]) -> tuple[list[str], list[str]]:
    """Drop context lines that look like block markers from both edges (they are the same
    lines in both); one among the changed lines makes the hunk not expressible."""
    while before and after and before[0] == after[0] and _MARKER.search(before[0]):
        before, after = before[1:], after[1:]
    while before and after and before[-1] == after[-1] and _MARKER.search(before[-1]):
        before, after = before[:-1], after[:-1]
    if any(_MARKER.search(line) for line in (*before, *after)):
        raise NotExpressible("a line inside the change looks like an edit-block marker")
    return before, after


def _leading_trimmed(hunk: list[str], before: list[str]) -> int:
    full = [ln[1:] for ln in hunk if ln[:1] in (" ", "-")]
    for skip in range(len(full) + 1):
        if full[skip : skip + len(before)] == before:
            return skip
    return 0


def _unique(
    content: list[str], lo: int, before: list[str], after: list[str]
) -> tuple[list[str], list[str]]:
    """Widen the block with the file's lines around it until SEARCH occurs once."""
    hi = lo + len(before)
    text = "\n".join(content)
    while "\n".join(before) and text.count("\n".join(before)) > 1:
        grew = False
        if lo > 0 and not _MARKER.search(content[lo - 1]):
            lo -= 1
            before, after = [content[lo], *before], [content[lo], *after]
            grew = True
        if hi < len(content) and not _MARKER.search(content[hi]):
            before, after = [*before, content[hi]], [*after, content[hi]]
            hi += 1
            grew = True
        if not grew:
            raise NotExpressible("no unique SEARCH text for a hunk")
    return before, after


def _block(path: str, before: list[str], after: list[str]) -> str:
    search = "\n".join(before)
    replace = "\n".join(after)
    return (
        f"{path}\n<<<<<<< SEARCH\n{search}{chr(10) if search else ''}=======\n"
        f"{replace}{chr(10) if replace else ''}>>>>>>> REPLACE\n"
    )
