"""`harness solve` through the CLI: resume after a real kill, bad input, --json output."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.store import read_jsonl
from tests.conftest import docker_ready, make_repo

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


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


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


BAD_INPUT: dict[str, tuple[list[str], str]] = {
    # name: (arguments, where {tmp} is the test's directory; what the message says)
    "missing issue file": (["{tmp}/missing.md", "--repo", EXAMPLE], "issue file .* does not exist"),
    "empty issue file": (["{tmp}/empty.md", "--repo", EXAMPLE], "is empty"),
    "directory as issue": (["{tmp}", "--repo", EXAMPLE], "is not a file"),
    "empty stdin": (["-", "--repo", EXAMPLE], "no issue text on standard input"),
    "no issue": (["--repo", EXAMPLE], "no issue given"),
    "missing --repo": ([ISSUE, "--repo", "{tmp}/nowhere"], "repository path .* does not exist"),
    "file as --repo": ([ISSUE, "--repo", "{tmp}/empty.md"], "is a file, not a directory"),
    "unreachable git URL": ([ISSUE, "--repo", "http://127.0.0.1:{port}/x.git"], "cannot clone"),
    "bad --commit": ([ISSUE, "--repo", "{tmp}/git", "--commit", "deadbeef"], "unknown commit"),
    "--commit on a plain dir": ([ISSUE, "--repo", EXAMPLE, "--commit", "HEAD"], "--commit needs"),
    "-n -1": ([ISSUE, "--repo", EXAMPLE, "-n", "-1"], "must be at least 1, not -1"),
    "-n 0": ([ISSUE, "--repo", EXAMPLE, "-n", "0"], "must be at least 1, not 0"),
    "--max-tokens 0": ([ISSUE, "--repo", EXAMPLE, "--max-tokens", "0"], "--max-tokens"),
    "--max-tokens -5": ([ISSUE, "--repo", EXAMPLE, "--max-tokens", "-5"], "--max-tokens"),
    "--max-usd -1": ([ISSUE, "--repo", EXAMPLE, "--max-usd", "-1"], "--max-usd"),
    "zero turns": ([ISSUE, "--repo", EXAMPLE, "-c", "editing.max_turns=0"], "max_turns"),
    "negative turns": ([ISSUE, "--repo", EXAMPLE, "-c", "testing.max_turns=-2"], "max_turns"),
    "zero execs": ([ISSUE, "--repo", EXAMPLE, "-c", "concurrency.execs=0"], "execs"),
    "zero exec timeout": ([ISSUE, "--repo", EXAMPLE, "-c", "testing.exec_timeout=0"], "timeout"),
    "ill-typed value": ([ISSUE, "--repo", EXAMPLE, "-c", "samples=lots"], "must be an integer"),
    "unknown model": ([ISSUE, "--repo", EXAMPLE, "--model", "gpt-17"], "unknown model"),
    "unpriced model with --max-usd": (
        [ISSUE, "--repo", EXAMPLE, "-m", "openai:my-model", "--max-usd", "5"],
        "no price is known for 'my-model'",
    ),
    "not a run directory": (["--resume", "{tmp}"], "not a run directory"),
    "--out is a file": ([ISSUE, "--repo", EXAMPLE, "--out", "{tmp}/empty.md"], "is a file"),
    # Malformed command lines, which Typer itself rejects: one line and a hint too.
    "-n abc": ([ISSUE, "--repo", EXAMPLE, "-n", "abc"], "Invalid value for '--samples' / '-n'"),
    "unknown option": ([ISSUE, "--repo", EXAMPLE, "--samplez", "3"], "No such option: --samplez"),
    "--max-usd five": ([ISSUE, "--repo", EXAMPLE, "--max-usd", "five"], "for '--max-usd'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_a_hint(
    tmp_path: Path, case: str, dead_port: int
) -> None:
    args, message = BAD_INPUT[case]
    (tmp_path / "empty.md").write_text("  \n")
    make_repo(tmp_path / "git", {"a.py": "x = 1\n"})
    out = tmp_path / "run"
    argv = [a.format(tmp=tmp_path, port=dead_port) for a in args]
    if "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(out)]
    proc = harness("solve", *argv, cache=tmp_path / "cache", stdin=subprocess.DEVNULL)
    code, _, err = finish(proc, timeout=120)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: "), err
    assert lines[1].startswith("hint: "), err
    assert re.search(message, lines[0]), err
    assert not out.exists(), "bad input left a run directory behind"


def test_an_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "x").write_text("")
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--out", str(existing), cache=tmp_path / "c")
    )
    assert code == 2 and "--resume" in err
    assert [p.name for p in existing.iterdir()] == ["x"]


def test_speculation_flags_become_engine_settings(tmp_path: Path) -> None:
    from harness.cli.options import PipelineFlags
    from harness.config import load

    flags = PipelineFlags(draft_model="hf:/m?gguf=a: b.gguf", speculate=5, conformal_alpha=0.25)
    engine = load(None, flags=flags.keys()).solve.engine
    assert (engine.draft_model, engine.speculate, engine.conformal_alpha) == (
        "hf:/m?gguf=a: b.gguf",
        5,
        0.25,
    )
    assert load(None, flags=PipelineFlags().keys()) == load()  # no flag given: nothing changes
    cache = tmp_path / "cache"
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--conformal-alpha", "2", cache=cache)
    )
    assert code == 2 and "engine.conformal_alpha must be in (0, 1]" in err
    code, _, err = finish(
        harness("solve", ISSUE, "--repo", EXAMPLE, "--draft-model", "self:x", cache=cache)
    )
    assert code == 2 and "'self:L' needs a layer count" in err


@pytest.mark.docker
def test_a_resumed_run_continues_the_recorded_spend(tmp_path: Path) -> None:
    """Capped at 12k tokens, killed (SIGKILL) once the server has billed 6k, resumed: the
    server bills at most 12k plus one call over both processes, and the summary and report
    count the spend of both."""
    if reason := docker_ready():
        pytest.skip(reason)
    from examples.scripted.durations_oracle import respond
    from tests.fixtures.fake_openai import fake_openai_thread

    cap, kill_at = 12_000, 6_000
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    with fake_openai_thread(respond, latency_s=0.2) as (url, server):
        model = f"openai:durations?base_url={url}"
        # Six samples want well over 12k tokens. A call the kill cuts off counts at its
        # reservation (prompt estimate + max_tokens): the oracle's replies are short, and small
        # reservations, one in flight at a time, leave the resumed run room to go on.
        common = ["--model", model, "-n", "6", "--max-tokens", str(cap), "--json"]
        common += [f"-c{stage}.max_tokens=320" for stage in ("testing", "editing", "selection")]
        common += ["-c", "context.enabled=false", "-c", "concurrency.llm_calls=1"]
        proc = harness("solve", ISSUE, "--repo", EXAMPLE, *common, "--out", str(run), cache=cache)
        deadline = time.monotonic() + 240
        while server.billed < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert server.billed >= kill_at, f"the run ended before it spent {kill_at}: {err}"
        assert not (run / "summary.json").exists(), "the run finished before it was killed"
        time.sleep(1.0)  # calls the kill cut off still finish (and bill) on the server
        billed_first = server.billed
        assert billed_first < cap

        code, out, err = finish(harness("solve", "--resume", str(run), "--json", cache=cache))
        assert code in (0, 3), err
        billed = server.billed
        biggest = server.biggest_call

    summary = json.loads(out)
    assert billed > billed_first, f"the resumed run made no call: {out[-2000:]}"
    assert billed <= cap + biggest, f"billed {billed} over both runs, cap {cap}"
    # The summary counts both processes: all that was billed (calls the kill cut off count
    # at their reservation, which is at least what they billed), and within the cap.
    assert billed <= summary["tokens"] <= cap + biggest
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["tokens"] == summary["tokens"]
    assert f"- tokens: {summary['tokens']:,}" in (run / "report.md").read_text()
    statuses = [s["status"] for s in on_disk["samples"]]
    assert "budget" in statuses, f"the cap never bit: {statuses}"
