"""The TTL predictor's priors come from measured tool gaps, not made-up ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.llm.engine.config import EngineConfig
from harness.llm.engine.ttl import MEASURED_GAP_S, TtlPolicy

GAPS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "tool_gaps.json"


def test_the_priors_are_the_committed_measurement() -> None:
    tools = json.loads(GAPS.read_text())["tools"]
    assert {t: tools[t]["median_s"] for t in MEASURED_GAP_S} == MEASURED_GAP_S
    assert set(MEASURED_GAP_S) == {t for t, v in tools.items() if v["n"] >= 10}


def test_a_tool_pins_for_its_measured_gap_before_any_observation() -> None:
    policy = TtlPolicy(EngineConfig(default_ttl_s=2.0, min_ttl_s=0.5, max_ttl_s=120.0))
    for tool, gap in MEASURED_GAP_S.items():
        assert policy.ttl(tool, 1000, 10, 100, pressure=0.0) == pytest.approx(1.5 * gap)
    assert policy.ttl("unknown_tool", 1000, 10, 100, pressure=0.0) == 2.0
    mine = TtlPolicy(EngineConfig(tool_priors=(("run_test", 20.0),)))
    assert mine.ttl("run_test", 1000, 10, 100, pressure=0.0) == 30.0  # a config's prior wins
