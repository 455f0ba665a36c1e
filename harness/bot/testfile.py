"""The reproduction test as a file in the repository.

A harness test is a standalone script (exit 0 fixed, 2 still broken, 1 crashed) that may call
`sys.exit` at import, which would abort a pytest run. At a pytest-style path (`test_*.py`,
`*_test.py`) it is wrapped in a test function that runs the script in a subprocess.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from harness.types import TestScript

WRAPPER = '''"""Reproduction test for issue #{number}, written by harness.

It fails without the fix and passes with it. The script in SCRIPT is the standalone test the
agents wrote; it exits 0 when the issue is fixed, 2 while it is not, 1 when it crashes.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[{depth}]
SCRIPT = {script!r}


def test_issue_{number}(tmp_path: Path) -> None:
    script = tmp_path / {name!r}
    script.write_text(SCRIPT)
    path = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {{**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"exit {{proc.returncode}} (2: the issue is still there, 1: the test crashed)\\n"
        f"{{proc.stdout}}\\n{{proc.stderr}}"
    )
'''


def is_pytest_path(path: str) -> bool:
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def repository_test(test: TestScript, path: str, issue_number: int) -> str:
    """The content to commit at `path` (a relative posix path) for `test`."""
    if not is_pytest_path(path):
        return test.content
    depth = len(PurePosixPath(path).parts) - 1
    name = PurePosixPath(test.path).name or "reproduce_issue.py"
    return WRAPPER.format(number=issue_number, depth=depth, script=test.content, name=name)
