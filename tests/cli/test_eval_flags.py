"""`harness eval run`'s flags are overrides of the config the solver gets, checked at load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.options import PipelineFlags
from harness.config import load


def test_flags_become_the_pipelines_config() -> None:
    flags = PipelineFlags(draft_model="self:6", speculate=3, conformal_alpha=0.2, max_usd=2.0)
    config = load(None, flags=flags.keys()).solve
    assert (config.engine.draft_model, config.engine.speculate) == ("self:6", 3)
    assert config.engine.conformal_alpha == 0.2 and config.budget.max_usd == 2.0


def _dataset(tmp_path: Path) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instance_id": "a__b-1", "repo": "a/b"}]))
    return path


def harness(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--conformal-alpha", "2"], "engine.conformal_alpha must be in (0, 1]"),
        (["--workers", "0"], "eval.workers (--workers) must be at least 1, not 0"),
        (["--test-timeout", "0"], "eval.test_timeout (--test-timeout) must be greater than 0"),
        (["--images", "cloud"], "eval.images (--images) must be one of local, official"),
        (["--max-usd", "-1"], "budget.max_usd (--max-usd) must be greater than 0"),
        (["-n", "abc"], "Invalid value for '--samples' / '-n'"),
        (["--solver", "m:f"], "--solver 'm:f': cannot import it"),
    ],
)
def test_bad_flag_values_are_refused_before_anything_runs(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = ["eval", "run", "--dataset", str(_dataset(tmp_path)), "--out", str(out), *extra]
    done = harness(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0], lines
    assert lines[1].startswith("hint: ")
    assert not out.exists()
