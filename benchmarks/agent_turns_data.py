"""Recording real turns of `harness solve` for benchmarks/agent_turns.py, and rebuilding them.

`record()` runs the solve pipeline in process (quick config: examples/smollm2-quick.yaml) with
a model wrapped in `Recorder`, which keeps every request (messages, sampling, program) and
reply. Sources: the bundled example (examples/durations, the scripted oracle as the model, so
every stage, selection included, happens) and a SWE-bench Lite instance of pallets/flask
(SmolLM2 itself as the model) checked out from a local git mirror.

Third-party code is not committed: message text that repeats 3 or more consecutive lines of a
repository file at the recorded commit is stored as a reference `{"ref": [path, first line,
lines]}` and rebuilt from the mirror (`git show commit:path`) when the benchmark runs; turns of
a source whose mirror is absent are skipped.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.llm.base import LLM, ChatRequest, ChatResponse
from harness.llm.engine.spec_policy import SpecStats

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "agent_turns.json"
MIN_RUN = 3  # lines of a repository file stored as a reference instead of text

Part = str | dict[str, list[Any]]


def stage_of(request: ChatRequest) -> str:
    """Which pipeline stage sent a request (from its prompts)."""
    system = request.messages[0].content if request.messages else ""
    last = request.messages[-1].content if request.messages else ""
    if "Would a developer need to read or change" in last or "Order these files" in last:
        return "context"
    if "reproduces a reported issue" in system:
        return "testing"
    if "fixing an issue" in system:
        return "editing"
    if "choosing the best of several candidate patches" in system:
        return "selection"
    return "other"


@dataclass
class Recorder:
    """An `LLM` that passes requests to `inner` and keeps each with its reply."""

    inner: LLM
    source: str
    turns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    async def chat(self, request: ChatRequest) -> ChatResponse:
        response = await self.inner.chat(request)
        s = request.sampling
        self.turns.append(
            {
                "source": self.source,
                "stage": stage_of(request),
                "program": request.program_id,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "max_tokens": s.max_tokens,
                "temperature": s.temperature,
                "seed": s.seed,
                "last_turn": request.last_turn,
                "next_tool": request.next_tool,
                "reply": response.text,
            }
        )
        return response

    def speculation_stats(self) -> SpecStats | None:
        return self.inner.speculation_stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- references to repository files -------------------------------------------------------------
def git_files(git_dir: Path, commit: str, paths: Iterable[str]) -> dict[str, list[str]]:
    """Lines (with their ends) of files at a commit of a repository (a bare mirror is fine)."""
    out: dict[str, list[str]] = {}
    for path in paths:
        res = subprocess.run(
            ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
            capture_output=True,
            check=False,
        )
        if res.returncode == 0:
            out[path] = res.stdout.decode("utf-8", "replace").splitlines(keepends=True)
    return out


def compress(text: str, files: dict[str, list[str]]) -> list[Part]:
    """`text` as literal strings and references to runs of >= MIN_RUN file lines."""
    where: dict[str, list[tuple[str, int]]] = {}
    for path, lines in files.items():
        for i, line in enumerate(lines):
            if line.strip():
                where.setdefault(line, []).append((path, i))
    lines = text.splitlines(keepends=True)
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(lines):
        best: tuple[int, str, int] = (0, "", 0)
        for path, j in where.get(lines[i], [])[:50]:
            src = files[path]
            n = 0
            while i + n < len(lines) and j + n < len(src) and lines[i + n] == src[j + n]:
                n += 1
            if n > best[0]:
                best = (n, path, j)
        n, path, j = best
        if n >= MIN_RUN:
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append({"ref": [path, j, n]})
            i += n
        else:
            literal.append(lines[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def expand(parts: Sequence[Part], files: dict[str, list[str]]) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            path, j, n = part["ref"]
            out.append("".join(files[path][j : j + n]))
    return "".join(out)


def find_mirror(name: str, explicit: Path | None = None) -> Path | None:
    """`<owner>+<name>/repo` under `explicit`, or under a `.mirror` directory of an ancestor
    of this checkout (where this project's machines keep them)."""
    roots = [explicit] if explicit is not None else [p / ".mirror" for p in ROOT.parents]
    for root in roots:
        candidate = root / name.replace("/", "+") / "repo"
        if (candidate / "HEAD").exists():
            return candidate
    return None


@dataclass(frozen=True)
class Turn:
    source: str
    stage: str
    program: str
    messages: tuple[tuple[str, str], ...]
    max_tokens: int
    recorded_reply: str


def load_turns(path: Path = DATA, mirrors: Path | None = None) -> tuple[list[Turn], dict[str, str]]:
    """The recorded turns, rebuilt; and the sources skipped (with why)."""
    data = json.loads(path.read_text())
    skipped: dict[str, str] = {}
    files: dict[str, dict[str, list[str]]] = {}
    for name, src in data["sources"].items():
        if "repo" not in src:
            files[name] = {}
            continue
        mirror = find_mirror(src["repo"], mirrors)
        if mirror is None:
            skipped[name] = f"no git mirror of {src['repo']} (pass --mirrors DIR)"
            continue
        files[name] = git_files(mirror, src["commit"], src["files"])
    turns = []
    for t in data["turns"]:
        if t["source"] not in files:
            continue
        f = files[t["source"]]
        msgs = tuple((m["role"], expand(m["content"], f)) for m in t["messages"])
        turns.append(
            Turn(
                t["source"],
                t["stage"],
                t["program"],
                msgs,
                int(t["max_tokens"]),
                expand(t["reply"], f),
            )
        )
    return turns, skipped
