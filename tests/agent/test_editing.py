"""The editing stage on real repositories: docstring underlines, replies cut off by the token
limit (told to the model, with what was and was not applied), and in-tree symbolic links."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.agent.edits import ParsedEdit
from harness.llm.scripted import ScriptedReply
from harness.sandboxes import Sandbox, SandboxBackend
from harness.sandboxes.local import LocalBackend
from tests.agent.stage import run_edit_stage
from tests.agent.test_edits import NUMPYDOC, block
from tests.conftest import git, make_repo

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * a\n"
# Exits 0 once both functions are right, 2 while either is wrong.
CALC_TEST = (
    "import sys\nfrom calc import add, mul\n"
    "sys.exit(0 if (add(2, 3), mul(2, 3)) == (5, 6) else 2)\n"
)


@pytest.fixture
async def backend(cache_dir: Path) -> AsyncIterator[SandboxBackend]:
    async with LocalBackend(cache_dir) as be:
        yield be


async def test_a_numpydoc_docstring_is_edited_exactly(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    commit = make_repo(repo, {"sympy_like/iterables.py": NUMPYDOC})
    search = "    Examples\n    ========\n\n    >>> list(uniq([1, 1, 2]))\n    [1, 2]"
    replace = "    Examples\n    ========\n\n    >>> list(uniq([1, 2, 1, 3]))\n    [1, 2, 3]"
    edit = f"<edit>\n{block('sympy_like/iterables.py', search, replace)}</edit>"
    boxes: list[Sandbox] = []
    run = await run_edit_stage(backend, repo, commit, [edit, "<done/>"], tmp_path, after=boxes)
    try:
        compiled = await boxes[0].exec(["python3", "-m", "py_compile", "sympy_like/iterables.py"])
        doctest = await boxes[0].exec(["python3", "-m", "doctest", "-v", "sympy_like/iterables.py"])
    finally:
        await boxes[0].close()
    assert compiled.ok, compiled.output
    assert doctest.ok and "1 passed" in doctest.output, doctest.output
    removed = [line for line in run.outcome.patch.splitlines() if line.startswith("-")]
    added = [line for line in run.outcome.patch.splitlines() if line.startswith("+")]
    assert removed[1:] == ["-    >>> list(uniq([1, 1, 2]))", "-    [1, 2]"]
    assert added[1:] == ["+    >>> list(uniq([1, 2, 1, 3]))", "+    [1, 2, 3]"]
    assert "=======" not in "".join(removed + added)


def cut_inside_second_block() -> tuple[str, int]:
    """An edit whose second block is cut by max_tokens (4 characters a token)."""
    first = block("calc.py", "    return a - b", "    return a + b")
    second = block("calc.py", "    return a * a", "    return a * b  # " + "x" * 400)
    text = f"<edit>\n{first}{second}</edit>"
    cut_at = text.index("    return a * b")  # inside block 2, before its REPLACE line
    return text, cut_at // 4


async def test_a_reply_cut_mid_block_applies_the_complete_blocks_and_says_so(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    commit = make_repo(repo, {"calc.py": CALC})
    text, max_tokens = cut_inside_second_block()
    rest = f"<edit>\n{block('calc.py', '    return a * a', '    return a * b')}</edit>"
    run = await run_edit_stage(
        backend,
        repo,
        commit,
        [text, rest, "<done/>"],
        tmp_path,
        test=CALC_TEST,
        max_tokens=max_tokens,
    )
    first = run.observations[0]
    assert f"cut off at the limit of {max_tokens} tokens" in first
    assert "block 2 (calc.py) ends before its >>>>>>> REPLACE line and was not applied" in first
    assert "block 1 was applied (calc.py)" in first
    assert "exit code 2" in first  # and the script ran on the partly edited code
    log = (tmp_path / "sample.jsonl").read_text()
    assert '"finish_reason": "length"' in log
    # The model sends the missing block; both fixes end up in the patch.
    assert run.outcome.reason == "done" and run.outcome.patched and run.outcome.patched.passes
    assert "+    return a + b" in run.outcome.patch and "+    return a * b" in run.outcome.patch


async def test_a_reply_cut_before_any_block_completes_applies_nothing(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    commit = make_repo(repo, {"calc.py": CALC})
    text = "<edit>\n" + block("calc.py", "    return a - b" + "\n" * 3 + "y" * 400, "z")
    run = await run_edit_stage(backend, repo, commit, [text, "<done/>"], tmp_path, max_tokens=20)
    assert run.observations[0].startswith("Your reply was cut off at the limit of 20 tokens")
    assert "your edit was not applied: block 1 (calc.py) ends before" in run.observations[0]
    assert "Send a shorter edit" in run.observations[0]
    assert run.outcome.patch == ""


async def test_a_cut_script_is_not_run(backend: SandboxBackend, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit = make_repo(repo, {"calc.py": CALC})
    script = "<test>\nimport sys\n" + "# " + "z" * 200 + "\nsys.exit(0)\n</test>"
    run = await run_edit_stage(
        backend,
        repo,
        commit,
        [ScriptedReply(script), "<done/>"],
        tmp_path,
        test=CALC_TEST,
        max_tokens=10,
    )
    assert "inside <test>, so the script is incomplete and was not run" in run.observations[0]
    assert run.outcome.test is not None and run.outcome.test.content == CALC_TEST
    assert '"what": "patched"' not in (tmp_path / "sample.jsonl").read_text()


async def test_an_edit_through_an_in_tree_link_edits_its_target(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"calc.py": CALC})
    os.symlink("calc.py", repo / "alias.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "alias")
    commit = git(repo, "rev-parse", "HEAD")
    edit = "<edit>\n" + block("alias.py", "    return a - b", "    return a + b") + "</edit>"
    run = await run_edit_stage(backend, repo, commit, [edit, "<done/>"], tmp_path)
    assert "diff --git a/calc.py b/calc.py" in run.outcome.patch
    assert "alias.py" not in run.outcome.patch  # the link stays a link


def test_parse_keeps_what_an_unfinished_reply_completed() -> None:
    text, _ = cut_inside_second_block()
    from harness.agent.edits import parse_edit

    parsed = parse_edit(text[: text.index("    return a * b")])
    assert isinstance(parsed, ParsedEdit) and len(parsed.blocks) == 1


async def test_an_edit_that_keeps_the_size_runs_the_new_code(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    # Python trusts cached bytecode whose source mtime (whole seconds) and size match: the
    # first run caches calc.py, the same-size edit right after must not run the stale code.
    repo = tmp_path / "repo"
    commit = make_repo(repo, {"calc.py": CALC})
    first = "<edit>\n" + block("calc.py", "    return a - b", "    return a + b") + "</edit>"
    second = "<edit>\n" + block("calc.py", "    return a * a", "    return a * b") + "</edit>"
    run = await run_edit_stage(
        backend, repo, commit, [first, second, "<done/>"], tmp_path, test=CALC_TEST
    )
    assert "exit code 2" in run.observations[0].split("edited code")[1]
    assert run.outcome.patched is not None and run.outcome.patched.passes
