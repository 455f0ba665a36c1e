"""`harness eval run`'s speculation flags reach the pipeline's engine settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.cli.common import speculation_overrides
from harness.cli.eval import _pipeline_factory


def test_flags_become_engine_settings_of_the_pipeline() -> None:
    factory, _ = _pipeline_factory(None, speculation_overrides("self:6", 3, 0.2))
    config = factory.args[0]
    assert (config.engine.draft_model, config.engine.speculate) == ("self:6", 3)
    assert config.engine.conformal_alpha == 0.2


def _dataset(tmp_path: Path) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instance_id": "a__b-1", "repo": "a/b"}]))
    return path


def test_bad_flag_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["eval", "run", "--dataset", str(_dataset(tmp_path)), "--out", str(out)]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}

    def harness(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "harness", *args, *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    done = harness("--conformal-alpha", "2")
    assert done.returncode == 2, done.stderr
    assert "engine.conformal_alpha must be in (0, 1]" in done.stderr
    assert not out.exists()
    done = harness("--solver", "m:f", "--draft-model", "self:4")
    assert done.returncode == 2, done.stderr
    assert "--solver replaces it" in done.stderr
