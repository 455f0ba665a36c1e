"""Context finding: candidate files, lexical ranking, verdict parsing, packing, recall."""

from __future__ import annotations

from harness.agent.context import (
    ContextFile,
    is_candidate,
    merge_rankings,
    pack,
    parse_ranking,
    recall,
    verdict,
)
from harness.agent.prerank import bm25_scores


def test_candidates_exclude_tests_and_non_source() -> None:
    assert is_candidate("pkg/parse.py") and is_candidate("src/lib.rs")
    for path in (
        "tests/test_parse.py",
        "pkg/tests/helpers.py",
        "test_x.py",
        "conftest.py",
        "README.md",
        "setup.cfg",
        "pkg/parse_test.go",
    ):
        assert not is_candidate(path), path


def test_bm25_prefers_the_file_the_issue_talks_about() -> None:
    docs = {
        "durations/parse.py": "def parse_duration(text):\n    component regex unit",
        "durations/format.py": "def format_duration(seconds):\n    parts join",
        "durations/units.py": "SECONDS = {} ALIASES canonical unit",
    }
    scores = bm25_scores("parse_duration drops the fractional part of a component", docs)
    assert max(scores, key=scores.__getitem__) == "durations/parse.py"


def test_verdicts() -> None:
    assert verdict("RELEVANT: it defines parse_duration") is True
    assert verdict("Irrelevant, only formatting") is False
    assert verdict("I am not sure") is None
    assert verdict("RELEVANT (not IRRELEVANT)") is True


def test_rankings_merge_by_mean_rank() -> None:
    files = [ContextFile(p, "", 0.0) for p in ("a.py", "b.py", "c.py")]
    r1 = parse_ranking("1. c.py\n2. a.py\n", ["a.py", "b.py", "c.py"])
    r2 = parse_ranking("c.py\nb.py\na.py", ["a.py", "b.py", "c.py"])
    assert r1 == ["c.py", "a.py"]
    merged = [f.path for f in merge_rankings(files, [r1, r2])]
    assert merged[0] == "c.py"


def test_pack_respects_budget_and_keeps_the_first_file() -> None:
    files = [ContextFile("big.py", "x = 1\n" * 2000, 1.0), ContextFile("small.py", "y = 2\n", 0.5)]
    text = pack(files, token_budget=300)
    assert text.startswith('<file path="big.py">') and "truncated" in text
    assert len(text) < 300 * 4
    both = pack(files[::-1], token_budget=300)
    assert "small.py" in both and "big.py" not in both


def test_recall() -> None:
    assert recall(["a.py", "b.py"], ["a.py"]) == 1.0
    assert recall(["b.py"], ["a.py", "b.py"]) == 0.5
    assert recall([], []) == 1.0
