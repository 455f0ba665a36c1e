"""A repository with a real bug, reproduction scripts, and candidate patches for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harness.agent.repro import ReproRunner
from harness.sandboxes import SandboxSpec
from harness.types import Candidate, TestScript
from tests.conftest import make_repo

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"


def patch(new_line: str) -> str:
    return (
        "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
        "@@ -1,4 +1,4 @@\n def add(a, b):\n-    return a - b\n"
        f"+{new_line}\n \n \n"
    )


CORRECT = Candidate("good", patch("    return a + b"), source="sample-00")
WRONG_CONST = Candidate("const", patch("    return 5"), source="sample-01")
WRONG_ABS = Candidate("abs", patch("    return abs(a - b)"), source="sample-02")
EMPTY = Candidate("empty", "", source="sample-03")
DUPLICATE = Candidate("good-again", patch("    return a + b"), source="sample-04")

TESTS = {
    # Fails on the original (exit 2), passes on a correct fix.
    "t-basic": TestScript(
        "import sys\nfrom calc import add\nsys.exit(0 if add(2, 3) == 5 else 2)\n"
    ),
    # Tells `return 5` apart from a real fix.
    "t-more": TestScript(
        "import sys\nfrom calc import add\nok = add(2, 3) == 5 and add(-1, 1) == 0\n"
        "sys.exit(0 if ok else 2)\n"
    ),
    # Already passes on the original code: it proves nothing and does not vote.
    "t-mul": TestScript("import sys\nfrom calc import mul\nsys.exit(0 if mul(2, 3) == 6 else 2)\n"),
}


@pytest.fixture
def calc_repo(tmp_path: Path) -> Path:
    path = tmp_path / "calc"
    make_repo(path, {"calc.py": CALC})
    return path


@pytest.fixture
async def runner(docker_backend: Any, calc_repo: Path) -> AsyncIterator[ReproRunner]:
    pristine = await docker_backend.open(SandboxSpec(repo=calc_repo))
    async with pristine:
        yield ReproRunner(pristine, timeout=60, output_limit=4000, limit=asyncio.Semaphore(4))
