"""Voting: every final test runs on every candidate patch, filled in as both arrive.

The matrix is built incrementally (no stage barrier): a new candidate runs against the tests
that exist, a new test runs against the candidates that exist, each cell exactly once, each
persisted as it completes. Votes of a candidate = tests that fail on the original code and
pass (exit 0) on it; when no test fails on the original, every test votes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.agent.paths import is_test_path
from harness.agent.repro import ReproRunner, TestRun
from harness.errors import SandboxError
from harness.sandboxes import Sandbox
from harness.store import append_jsonl, read_jsonl
from harness.types import Candidate, TestScript

_DIFF_FILE = re.compile(r"^\+\+\+ b/(.+)$", re.MULTILINE)


def normalize_patch(patch: str) -> str:
    """A key under which patches that differ only in metadata or whitespace are equal."""
    keep = []
    for line in patch.splitlines():
        if line.startswith(("index ", "diff --git")) or line.startswith("@@"):
            continue
        keep.append(re.sub(r"\s+", " ", line).rstrip())
    return "\n".join(keep).strip()


def changed_lines(patch: str) -> int:
    return sum(
        1 for line in patch.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def drop_reason(patch: str) -> str | None:
    """Why a patch is not worth voting on (empty or trivial), or None."""
    if not patch.strip():
        return "empty"
    files = _DIFF_FILE.findall(patch)
    if files and all(is_test_path(f) for f in files):
        return "touches only tests"
    minus = sorted(
        "".join(line[1:].split())
        for line in patch.splitlines()
        if line.startswith("-") and not line.startswith("---")
    )
    plus = sorted(
        "".join(line[1:].split())
        for line in patch.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    )
    if minus == plus:
        return "whitespace only"
    return None


def patch_key(patch: str) -> str:
    return hashlib.sha256(normalize_patch(patch).encode()).hexdigest()[:16]


@dataclass
class Matrix:
    """Results so far. Candidates with the same (normalized) patch share one row, named by
    the smallest of their ids, so the outcome does not depend on the order they arrived in.
    cells[(patch_key, test_id)] is None when the patch did not apply."""

    tests: dict[str, TestScript] = field(default_factory=dict)
    candidates: dict[str, Candidate] = field(default_factory=dict)  # every one not dropped
    groups: dict[str, list[str]] = field(default_factory=dict)  # patch key -> candidate ids
    dropped: dict[str, str] = field(default_factory=dict)  # candidate id -> reason
    original: dict[str, TestRun] = field(default_factory=dict)
    cells: dict[tuple[str, str], TestRun | None] = field(default_factory=dict)

    def voters(self) -> list[str]:
        failing = [t for t in self.tests if t in self.original and not self.original[t].passes]
        return failing or list(self.tests)

    def representative(self, key: str) -> Candidate:
        return self.candidates[min(self.groups[key])]

    def aliases(self, candidate_id: str) -> list[str]:
        key = patch_key(self.candidates[candidate_id].patch)
        return [c for c in sorted(self.groups[key]) if c != candidate_id]

    def cell(self, candidate_id: str, test_id: str) -> TestRun | None:
        return self.cells.get((patch_key(self.candidates[candidate_id].patch), test_id))

    def has_cell(self, candidate_id: str, test_id: str) -> bool:
        return (patch_key(self.candidates[candidate_id].patch), test_id) in self.cells

    def votes(self, candidate_id: str) -> int:
        key = patch_key(self.candidates[candidate_id].patch)
        return sum(
            1 for t in self.voters() if (run := self.cells.get((key, t))) is not None and run.passes
        )

    def ranked(self) -> list[Candidate]:
        """One candidate per distinct patch: most votes, then smallest diff, then id."""
        reps = [self.representative(key) for key in self.groups]
        return sorted(
            reps,
            key=lambda c: (-self.votes(c.candidate_id), changed_lines(c.patch), c.candidate_id),
        )

    def to_json(self) -> dict[str, Any]:
        reps = self.ranked()
        return {
            "tests": list(self.tests),
            "voters": self.voters(),
            "original": {t: r.to_json() for t, r in self.original.items()},
            "candidates": {
                c.candidate_id: {
                    "votes": self.votes(c.candidate_id),
                    "source": c.source,
                    "changed_lines": changed_lines(c.patch),
                    "duplicates": self.aliases(c.candidate_id),
                }
                for c in reps
            },
            "dropped": self.dropped,
            "cells": {
                f"{c.candidate_id}|{t}": (run.exit_code if run is not None else "no-apply")
                for c in reps
                for t in self.tests
                if self.has_cell(c.candidate_id, t)
                for run in [self.cell(c.candidate_id, t)]
            },
            "ranking": [c.candidate_id for c in reps],
        }


class Voting:
    """Fills a Matrix as tests and candidates arrive; `wait()` returns when all cells are in.

    Each distinct patch gets one sandbox (forked and patched once) and a worker that runs the
    tests queued for it, one after another, as they arrive: a new cell costs one test run,
    not a fork and a patch application. Use as `async with`: leaving it early (an error, a
    cancellation) cancels the workers and awaits them, closing their sandboxes.
    """

    def __init__(self, runner: ReproRunner, log_path: Path) -> None:
        self.runner = runner
        self.log_path = log_path
        self.matrix = Matrix()
        self._scheduled: set[tuple[str, str]] = set()
        self._queues: dict[str, asyncio.Queue[str | None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        for record in read_jsonl(log_path):  # results of a previous (interrupted) run
            if record.get("kind") == "cell":
                run = TestRun.from_json(record["run"]) if record.get("run") else None
                key = (str(record["patch"]), str(record["test"]))
                self.matrix.cells[key] = run
                self._scheduled.add(key)

    async def __aenter__(self) -> Voting:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the workers still running (none after `wait()`) and await them."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        self._queues.clear()

    async def add_test(self, test_id: str, test: TestScript | None) -> None:
        if test is None or test_id in self.matrix.tests:
            return
        # Its run on the original code first: a test whose run there raises is never added.
        original = await self.runner.on_original(test)
        if test_id in self.matrix.tests:  # added meanwhile
            return
        self.matrix.tests[test_id] = test
        self.matrix.original[test_id] = original
        for key in list(self.matrix.groups):
            self._schedule(key, [test_id])

    def add_candidate(self, candidate: Candidate) -> str | None:
        """Add a candidate; returns the id its row is named by (None when dropped)."""
        reason = drop_reason(candidate.patch)
        if reason is not None:
            self.matrix.dropped[candidate.candidate_id] = reason
            return None
        key = patch_key(candidate.patch)
        self.matrix.candidates[candidate.candidate_id] = candidate
        group = self.matrix.groups.setdefault(key, [])
        group.append(candidate.candidate_id)
        if len(group) == 1:
            self._schedule(key, list(self.matrix.tests))
        return min(group)

    def _schedule(self, key: str, test_ids: list[str]) -> None:
        todo = [t for t in test_ids if (key, t) not in self._scheduled]
        if not todo:
            return
        self._scheduled.update((key, t) for t in todo)
        if key not in self._queues:
            self._queues[key] = asyncio.Queue()
            self._workers.append(asyncio.create_task(self._worker(key, self._queues[key])))
        for test_id in todo:
            self._queues[key].put_nowait(test_id)

    async def _worker(self, key: str, queue: asyncio.Queue[str | None]) -> None:
        box: Sandbox | None = None
        applies = True
        try:
            while (test_id := await queue.get()) is not None:
                broken: SandboxError | None = None
                if box is None and applies:
                    try:
                        box = await self.runner.patched(self.matrix.representative(key).patch)
                    except SandboxError as exc:  # forking or patching broke: failed cells
                        broken = exc
                    applies = box is not None
                run = None
                if broken is not None:
                    run = TestRun(1, f"harness: the sandbox failed: {broken}")
                    applies = True  # the next test tries a fresh fork
                elif box is not None:
                    try:
                        run = await self.runner.run_in(box, self.matrix.tests[test_id])
                    except SandboxError as exc:  # the sandbox broke: a failed cell, not a crash
                        run = TestRun(1, f"harness: the sandbox failed: {exc}")
                self._record(key, test_id, run)
        finally:
            if box is not None:
                await box.close()

    def _record(self, key: str, test_id: str, run: TestRun | None) -> None:
        self.matrix.cells[(key, test_id)] = run
        append_jsonl(
            self.log_path,
            {
                "kind": "cell",
                "patch": key,
                "test": test_id,
                "run": run.to_json() if run is not None else None,
            },
        )

    async def wait(self) -> Matrix:
        """Finish the queued cells (no more tests or candidates may arrive) and close up."""
        for queue in self._queues.values():
            queue.put_nowait(None)
        await asyncio.gather(*self._workers)
        self._workers.clear()
        self._queues.clear()
        return self.matrix
