"""`harness solve` through the CLI: resume after a real kill, bad input, --json output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.store import read_jsonl
from tests.conftest import docker_ready

ROOT = Path(__file__).resolve().parents[2]
ISSUE = str(ROOT / "examples" / "durations.issue.md")
EXAMPLE = str(ROOT / "examples" / "durations")

WRAPPER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from examples.scripted.durations_oracle import respond
LATENCY_S = 0.4
"""


def harness(*args: str, cache: Path, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )  # type: ignore[call-overload]


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def steps(run: Path) -> list[tuple[str, ...]]:
    """Every model call, test run and vote cell a run directory records."""
    found: list[tuple[str, ...]] = []
    for log in [*sorted((run / "trajectories").glob("*.jsonl")), run / "selection.jsonl"]:
        for event in read_jsonl(log):
            if event["kind"] in ("llm", "exec"):
                found.append(
                    (
                        log.name,
                        event["stage"],
                        str(event["turn"]),
                        event["kind"],
                        str(event.get("what", "")),
                    )
                )
    for event in read_jsonl(run / "votes.jsonl"):
        found.append(("votes", event["patch"], event["test"]))
    for event in read_jsonl(run / "context.jsonl"):
        if event["kind"] == "relevance":
            found.append(("context", event["path"]))
    return found


@pytest.mark.docker
def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    if reason := docker_ready():
        pytest.skip(reason)
    script = tmp_path / "oracle_slow.py"
    script.write_text(WRAPPER)
    common = ["solve", ISSUE, "--repo", EXAMPLE, "--model", f"script:{script}", "-n", "4", "--json"]
    cache = tmp_path / "cache"

    code, out, err = finish(harness(*common, "--out", str(tmp_path / "whole"), cache=cache))
    assert code == 0, err
    whole = json.loads(out)

    run = tmp_path / "killed"
    proc = harness(*common, "--out", str(run), cache=cache)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once some sample is in its editing stage
        logs = [e for p in (run / "trajectories").glob("*.jsonl") for e in read_jsonl(p)]
        if any(e["kind"] == "llm" and e["stage"] == "editing" for e in logs):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    before = steps(run)

    code, out, err = finish(harness("solve", "--resume", str(run), "--json", cache=cache))
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["patch"] == whole["patch"] and resumed["winner"] == whole["winner"]
    assert resumed["candidates"] == whole["candidates"]
    after = steps(run)
    assert after[: len(before)] == before or set(before) <= set(after)
    duplicates = [step for step, count in Counter(after).items() if count > 1]
    assert duplicates == [], f"steps that ran twice: {duplicates}"
    assert Counter(s[3] for s in after if len(s) == 5) == Counter(
        s[3] for s in steps(tmp_path / "whole") if len(s) == 5
    )


def test_bad_input_is_reported_clearly(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code, _, err = finish(
        harness("solve", str(tmp_path / "missing.md"), "--repo", EXAMPLE, cache=cache)
    )
    assert code == 1 and "issue file" in err and "does not exist" in err
    assert "Traceback" not in err
    code, _, err = finish(harness("solve", ISSUE, "--repo", str(tmp_path / "nowhere"), cache=cache))
    assert code == 1 and "does not exist" in err
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "-c", "samples=lots", cache=cache)
    )
    assert code == 2 and "must be an integer" in err
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--model", "gpt-17", cache=cache)
    )
    assert code == 2 and "unknown model" in err
    code, _, err = finish(harness("solve", "--resume", str(tmp_path), cache=cache))
    assert code == 1 and "not a run directory" in err
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "x").write_text("")
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--out", str(existing), cache=cache)
    )
    assert code == 2 and "--resume" in err


def test_speculation_flags_become_engine_settings(tmp_path: Path) -> None:
    from harness.cli.common import speculation_overrides
    from harness.config import load_config

    engine = load_config(None, speculation_overrides("hf:/m?gguf=a: b.gguf", 5, 0.25)).engine
    assert (engine.draft_model, engine.speculate, engine.conformal_alpha) == (
        "hf:/m?gguf=a: b.gguf",
        5,
        0.25,
    )
    assert speculation_overrides(None, None, None) == []
    cache = tmp_path / "cache"
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--conformal-alpha", "2", cache=cache)
    )
    assert code == 2 and "engine.conformal_alpha must be in (0, 1]" in err
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--draft-model", "self:x", cache=cache)
    )
    assert code == 2 and "'self:L' needs a layer count" in err
