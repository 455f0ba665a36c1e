"""The suite's own rules: under CI=true a skipped Docker or bubblewrap test is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("marker", ["docker", "bwrap"])
@pytest.mark.parametrize("ci", ["true", ""])
def test_a_skipped_sandbox_test_fails_under_ci(tmp_path: Path, marker: str, ci: str) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
    )
    (tmp_path / "test_probe.py").write_text(
        f"import pytest\n\n@pytest.mark.{marker}\ndef test_probe():\n    pytest.skip('absent')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ci:
        assert result.returncode == 1 and "may not be skipped" in result.stdout, result.stdout
    else:
        assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
