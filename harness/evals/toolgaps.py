"""Tool-call timings of a pipeline solve, read back from its run directory.

Two measures, for every solve `harness eval run` records (solves.jsonl: `exec_s`, `gap_s`):
sandbox exec seconds per stage (reproduction scripts in testing and editing, the voting
cells, the selection loop's runs), and per tool hint the gap between a model reply and the
same program's next request (what the engine's KV pin has to bridge: the exec plus forks,
patching, prompt building). Both come from the append-only logs the pipeline already
writes, so other solvers simply record none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from harness.store import read_jsonl

# The `next_tool` hint each stage's model turns carry (agent/testing.py, agent/editing.py,
# selectors/selection_loop.py).
STAGE_TOOLS = {"testing": "run_test", "editing": "edit_and_test", "selection": "run_selection_test"}


def tool_times(run_dir: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(exec seconds per stage, gap seconds per tool) of one solve's run directory."""
    execs: dict[str, list[float]] = {}
    gaps: dict[str, list[float]] = {}
    logs = sorted((run_dir / "trajectories").glob("*.jsonl"))
    seen: set[str] = set()  # a script's run on the original code is made once, logged by all
    for path in [*logs, run_dir / "selection.jsonl"]:
        events = list(read_jsonl(path))
        for event in events:
            if event.get("kind") == "exec":
                secs = _duration(event.get("result"))
                if event.get("what") == "original":
                    key = json.dumps(event.get("result"), sort_keys=True)
                    if key in seen:
                        continue
                    seen.add(key)
                if secs is not None:
                    execs.setdefault(str(event.get("stage", "")), []).append(secs)
        replies = [e for e in events if e.get("kind") == "llm" and "time" in e]
        for before, after in pairwise(replies):
            tool = STAGE_TOOLS.get(str(before.get("stage", "")))
            sent = float(after["time"]) - float(after.get("latency_s") or 0.0)
            gap = sent - float(before["time"])
            if tool is not None and gap >= 0:
                gaps.setdefault(tool, []).append(round(gap, 3))
    for cell in read_jsonl(run_dir / "votes.jsonl"):
        if cell.get("kind") == "cell":
            secs = _duration(cell.get("run"))
            if secs is not None:
                execs.setdefault("voting", []).append(secs)
    return execs, gaps


def merge(into: dict[str, list[float]], more: Mapping[str, Iterable[float]]) -> None:
    for key, values in more.items():
        into.setdefault(key, []).extend(values)


def _duration(result: Any) -> float | None:
    if isinstance(result, Mapping) and result.get("duration_s") is not None:
        return round(float(result["duration_s"]), 3)
    return None
