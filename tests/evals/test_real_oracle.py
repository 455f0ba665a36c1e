"""The benchmarks' oracle (benchmarks/real_oracle.py) on the `calc` project: its edit
blocks make the gold patch's files, its reproduction script fails on the original code and
passes on the fix, in both modes (pytest node ids, plain test functions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.real_oracle import (
    NotExpressible,
    Oracle,
    answer_for,
    edit_blocks,
    reproduction_script,
)
from harness.agent.edits import apply_blocks, parse_edit_blocks
from harness.llm.base import ChatRequest, Message, Sampling
from tests.evals.conftest import GOLD, SETUP_FILES, TEST_PATCH, make_project, patch_text

ORIGINAL = SETUP_FILES["calc/__init__.py"]


def checkout(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "p")
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(project.repo), str(work)], check=True)
    return work


def run(script: str, work: Path) -> int:
    path = work.parent / "reproduce.py"
    path.write_text(script)
    env = {
        "PYTHONPATH": str(work),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        # An edit within the same second as a cached .pyc, same size: Python would reuse it.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run([sys.executable, str(path)], cwd=work, env=env, capture_output=True)
    return done.returncode


def test_edit_blocks_rebuild_the_gold_files() -> None:
    blocks = parse_edit_blocks(edit_blocks(GOLD, {"calc/__init__.py": ORIGINAL}))
    new = apply_blocks(blocks, {"calc/__init__.py": ORIGINAL})
    assert new["calc/__init__.py"] == ORIGINAL.replace("return a - b", "return a + b")


def test_a_marker_like_line_inside_the_change_is_refused() -> None:
    underline = patch_text(
        "diff --git a/calc/__init__.py b/calc/__init__.py",
        "--- a/calc/__init__.py",
        "+++ b/calc/__init__.py",
        "@@ -1,2 +1,5 @@",
        " def add(a, b):",
        '+    """Sum',
        "+    =======",
        '+    """',
        "     return a - b",
    )
    with pytest.raises(NotExpressible):
        edit_blocks(underline, {"calc/__init__.py": ORIGINAL})


@pytest.mark.parametrize("tests", [["tests/test_calc.py::test_add"], ["test_add"]])
def test_the_reproduction_script_fails_before_the_fix_and_passes_after(
    tmp_path: Path, tests: list[str]
) -> None:
    work = checkout(tmp_path)
    (work / "tests" / "__init__.py").write_text("")  # plain functions import tests.test_calc
    script = reproduction_script(TEST_PATCH, tests)
    assert run(script, work) == 2
    status = subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True)
    assert status.stdout.decode().strip() == "?? tests/__init__.py"  # the tests came back off
    subprocess.run(["git", "apply", "-"], cwd=work, input=GOLD.encode(), check=True)
    assert run(script, work) == 0


def test_the_oracle_answers_each_stage_and_picks_the_fix() -> None:
    record = {
        "instance_id": "calc-1",
        "patch": GOLD,
        "test_patch": TEST_PATCH,
        "FAIL_TO_PASS": '["tests/test_calc.py::test_add"]',
    }
    oracle = Oracle({"calc-1": answer_for(record, {"calc/__init__.py": ORIGINAL})})

    def ask(program: str, system: str, *rest: str) -> str:
        messages = (Message("system", system), *(Message("user", m) for m in rest))
        return oracle(ChatRequest(messages, Sampling(), program_id=program))

    assert ask("calc-1/ctx", "", "Would a developer need to read or change calc/__init__.py?")
    assert "IRRELEVANT" in ask("calc-1/ctx", "", "Would a developer need to read or change x.py?")
    assert "<test>" in ask("calc-1:sample-00", "... reproduces a reported issue ...")
    assert "return a + b" in ask("calc-1:sample-00", "... fixing an issue ...")
    decoy = ask("calc-1:sample-01", "... fixing an issue ...")
    assert "return a + b" not in decoy and "# Handle the case" in decoy
    listing = (
        "<candidate number=1>\n-    return a - b\n+    # Handle\n"
        "<candidate number=2>\n+    return a + b\n"
    )
    chosen = ask("calc-1:selection", "choosing the best of several candidate patches", listing)
    assert chosen.startswith("<choose>2</choose>")
