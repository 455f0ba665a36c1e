"""Voting on constructed candidates (one correct, several wrong, one empty) in real sandboxes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness.agent.repro import ReproRunner
from harness.selectors.voting import Voting, drop_reason, normalize_patch
from tests.selectors.conftest import (
    CORRECT,
    DUPLICATE,
    EMPTY,
    TESTS,
    WRONG_ABS,
    WRONG_CONST,
    patch,
)


async def test_the_correct_candidate_gets_the_most_votes(
    runner: ReproRunner, tmp_path: Path
) -> None:
    voting = Voting(runner, tmp_path / "votes.jsonl")
    # Interleaved arrival, as samples finish: candidates before some tests exist.
    assert voting.add_candidate(WRONG_CONST) == "const"
    await voting.add_test("t-basic", TESTS["t-basic"])
    assert voting.add_candidate(CORRECT) == "good"
    assert voting.add_candidate(EMPTY) is None
    assert voting.add_candidate(DUPLICATE) == "good"  # same patch: one row, the smaller id
    await voting.add_test("t-more", TESTS["t-more"])
    await voting.add_test("t-mul", TESTS["t-mul"])
    voting.add_candidate(WRONG_ABS)
    matrix = await voting.wait()

    assert matrix.voters() == ["t-basic", "t-more"]  # t-mul passes on the original code
    votes = {c.candidate_id: matrix.votes(c.candidate_id) for c in matrix.ranked()}
    assert votes == {"const": 1, "good": 2, "abs": 0}
    assert matrix.ranked()[0].candidate_id == "good"
    assert matrix.dropped == {"empty": "empty"}
    assert matrix.aliases("good") == ["good-again"]
    # Every cell ran exactly once, and each was persisted as it finished.
    assert len(matrix.cells) == 3 * 3  # three distinct patches x three tests
    lines = (tmp_path / "votes.jsonl").read_text().splitlines()
    assert len(lines) == 9


async def test_a_resumed_vote_reuses_recorded_cells(runner: ReproRunner, tmp_path: Path) -> None:
    log = tmp_path / "votes.jsonl"
    first = Voting(runner, log)
    await first.add_test("t-basic", TESTS["t-basic"])
    first.add_candidate(CORRECT)
    await first.wait()
    again = Voting(runner, log)
    await again.add_test("t-basic", TESTS["t-basic"])
    again.add_candidate(CORRECT)
    await again.add_test("t-more", TESTS["t-more"])
    matrix = await again.wait()
    assert matrix.votes("good") == 2
    assert len(log.read_text().splitlines()) == 2  # only the new cell ran


async def test_a_patch_that_does_not_apply_gets_no_votes(
    runner: ReproRunner, tmp_path: Path
) -> None:
    voting = Voting(runner, tmp_path / "votes.jsonl")
    from harness.types import Candidate

    broken = Candidate("broken", patch("    return a + b").replace("a - b", "x - y"))
    voting.add_candidate(broken)
    await voting.add_test("t-basic", TESTS["t-basic"])
    matrix = await voting.wait()
    assert matrix.has_cell("broken", "t-basic") and matrix.cell("broken", "t-basic") is None
    assert matrix.votes("broken") == 0


def test_filters() -> None:
    assert drop_reason("") == "empty"
    assert drop_reason(patch("    return a + b")) is None
    whitespace = patch("    return a - b ").replace("+    return a - b \n", "+    return  a - b\n")
    assert drop_reason(whitespace) == "whitespace only"
    only_tests = "--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n@@ -1 +1 @@\n-x\n+y\n"
    assert drop_reason(only_tests) == "touches only tests"
    assert normalize_patch(patch("    return a + b")) == normalize_patch(
        "index 123..456 100644\n" + patch("    return a  +  b")
    )


async def test_duplicates_are_named_the_same_whatever_arrives_first(
    runner: ReproRunner, tmp_path: Path
) -> None:
    voting = Voting(runner, tmp_path / "votes.jsonl")
    assert voting.add_candidate(DUPLICATE) == "good-again"
    assert voting.add_candidate(CORRECT) == "good"  # the smaller id now names the row
    matrix = await voting.wait()
    assert [c.candidate_id for c in matrix.ranked()] == ["good"]
    assert matrix.aliases("good") == ["good-again"]


class KillingForks:
    """The pristine sandbox, except that each fork's container is killed before it is handed
    out: applying a patch to it then fails inside the real sandbox."""

    def __init__(self, pristine: Any) -> None:
        self.pristine = pristine
        self.forks: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pristine, name)

    async def fork(self) -> Any:
        box = await self.pristine.fork()
        self.forks.append(box)
        await asyncio.to_thread(box.container.kill)
        return box


async def test_a_fork_whose_patching_fails_is_closed_and_the_cells_fail(
    runner: ReproRunner, tmp_path: Path
) -> None:
    killing = KillingForks(runner.pristine)
    broken = ReproRunner(
        killing,  # type: ignore[arg-type]
        timeout=60,
        output_limit=4000,
        limit=runner.limit,
    )
    voting = Voting(broken, tmp_path / "votes.jsonl")
    voting.matrix.tests["t-basic"] = TESTS["t-basic"]  # its run on the original is not the point
    voting.add_candidate(CORRECT)  # schedules the cell
    matrix = await voting.wait()
    assert killing.forks, "no fork was made"
    assert all(box.closed for box in killing.forks)
    (cell,) = matrix.cells.values()
    assert cell is not None and "the sandbox failed" in cell.output
