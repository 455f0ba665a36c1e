"""The selection loop with a scripted model: discriminating tests run on every candidate;
invalid answers fall back to the vote winner. Ensembling reads other systems' predictions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.agent.repro import ReproRunner
from harness.agent.trajectory import Conversation, TrajectoryLog
from harness.errors import ConfigError
from harness.llm.base import ChatRequest, Sampling
from harness.llm.scripted import ScriptedLLM, ScriptedReply
from harness.selectors.ensemble import load_candidates
from harness.selectors.selection_loop import select
from tests.selectors.conftest import CORRECT, WRONG_CONST

DISCRIMINATING = (
    "<test>\nimport sys\nfrom calc import add\n"
    "sys.exit(0 if add(-1, 1) == 0 and add(2, 3) == 5 else 2)\n</test>"
)


def conversation(llm: ScriptedLLM, tmp_path: Path, turns: int = 4) -> Conversation:
    log = TrajectoryLog.open(tmp_path / "selection.jsonl", "selection")
    return Conversation(llm, log, "selection", "t:selection", Sampling(), max_turns=turns)


async def test_model_tests_the_candidates_then_picks_the_one_that_passes(
    runner: ReproRunner, tmp_path: Path
) -> None:
    def responder(request: ChatRequest) -> str:
        last = request.messages[-1].content
        if "candidate 1:" not in last:
            return DISCRIMINATING
        passing = re.findall(r"candidate (\d+): exit code 0", last)
        return f"<choose>{passing[0]}</choose> It passes the discriminating test."

    llm = ScriptedLLM(responder)
    ranked = [WRONG_CONST, CORRECT]  # the wrong one first, as if it had more votes
    selection = await select(
        conversation(llm, tmp_path),
        runner,
        "add is broken",
        ranked,
        {"const": 2, "good": 2},
        files="",
    )
    assert selection.winner == CORRECT and selection.by == "model"
    assert "discriminating" in selection.reasoning
    observation = llm.requests[1].messages[-1].content
    assert "original code: exit code 2" in observation
    assert "candidate 1: exit code 2" in observation and "candidate 2: exit code 0" in observation


@pytest.mark.parametrize("reply", ["<choose>7</choose>", "no idea", "<choose>two</choose>"])
async def test_invalid_answers_fall_back_to_the_vote_winner(
    runner: ReproRunner, tmp_path: Path, reply: str
) -> None:
    llm = ScriptedLLM(lambda request: reply)
    selection = await select(
        conversation(llm, tmp_path, turns=3),
        runner,
        "issue",
        [CORRECT, WRONG_CONST],
        {"good": 2, "const": 1},
        files="",
    )
    assert selection.winner == CORRECT and selection.by == "votes"
    assert len(llm.requests) == 3  # it kept asking, within the turn limit


async def test_single_candidate_needs_no_model(runner: ReproRunner, tmp_path: Path) -> None:
    llm = ScriptedLLM([])
    selection = await select(
        conversation(llm, tmp_path), runner, "issue", [CORRECT], {"good": 1}, files=""
    )
    assert selection.winner == CORRECT and selection.by == "only-candidate" and not llm.requests


async def test_a_test_cut_off_at_max_tokens_is_not_run(runner: ReproRunner, tmp_path: Path) -> None:
    cut = ScriptedReply("<test>\nimport sys\nfrom calc import add\nsys.exit(0 if add(", "length")
    llm = ScriptedLLM([cut, "<choose>2</choose>"])
    selection = await select(
        conversation(llm, tmp_path),
        runner,
        "add is broken",
        [WRONG_CONST, CORRECT],
        {"const": 2, "good": 2},
        files="",
    )
    told = llm.requests[1].messages[-1].content
    assert "cut off" in told and "was not run" in told and "candidate 1:" not in told
    assert selection.winner == CORRECT and selection.by == "model"


def test_ensemble_formats(tmp_path: Path) -> None:
    record = {"instance_id": "t-1", "model_name_or_path": "other", "model_patch": CORRECT.patch}
    lines = tmp_path / "preds.jsonl"
    lines.write_text(json.dumps(record) + "\n" + json.dumps({**record, "instance_id": "t-2"}))
    as_list = tmp_path / "preds.json"
    as_list.write_text(json.dumps([record]))
    keyed = tmp_path / "keyed.json"
    keyed.write_text(
        json.dumps({"t-1": {"model_patch": CORRECT.patch, "model_name_or_path": "other"}})
    )
    for path in (lines, as_list, keyed):
        (candidate,) = load_candidates(path, "t-1")
        assert candidate.patch == CORRECT.patch and candidate.source == "ensemble:other"
    assert load_candidates(lines, "t-9") == []
    # A file holding a single prediction applies to any task (e.g. a local issue).
    assert len(load_candidates(as_list, "anything")) == 1


def test_ensemble_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instance_id": "t"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        load_candidates(bad, "t")
    missing = tmp_path / "m.jsonl"
    missing.write_text('{"instance_id": "t"}\n')
    with pytest.raises(ConfigError, match="model_patch"):
        load_candidates(missing, "t")
    with pytest.raises(ConfigError, match="cannot read"):
        load_candidates(tmp_path / "none.jsonl", "t")
