"""TTL choice from per-tool gap statistics, and pin ranking (pure Python)."""

from __future__ import annotations

import pytest

from harness.llm.engine.config import EngineConfig
from harness.llm.engine.ttl import DEFAULT_TOOL, MAX_TOOLS, GapStats, TtlPolicy


def test_gap_window_keeps_recent_sorted() -> None:
    s = GapStats(window=3)
    for g in (5.0, 1.0, 3.0, 2.0):
        s.observe("t", g)
    assert s.samples("t") == [1.0, 2.0, 3.0]
    assert s.cdf("t", 2.0) == 2 / 3


def test_tool_names_a_client_sprays_are_bounded_least_recent_first() -> None:
    """`next_tool` comes from clients of `harness serve`: a million distinct names keep at
    most `max_tools` of them; the ones in use stay, the default name stays."""
    s = GapStats(window=4, max_tools=3)
    s.observe(None, 9.0)
    s.observe("run_test", 1.0)
    for i in range(1000):
        s.observe(f"hostile-{i}", 0.5)
        s.observe("run_test", 1.0)  # in use: refreshed each time
    assert s.tools == [DEFAULT_TOOL, "hostile-999", "run_test"]
    assert s.samples("run_test") == [1.0] * 4 and s.samples(None) == [9.0]
    assert s.samples("hostile-0") == [] and s.cdf("hostile-0", 1.0) == 0.0
    only = GapStats(window=4, max_tools=1)
    only.observe(None, 1.0)
    only.observe("a", 2.0)
    assert only.tools == ["a"]


def test_a_forgotten_tool_falls_back_to_the_default_ttl() -> None:
    p = TtlPolicy(EngineConfig(default_ttl_s=2.0, prefill_tok_per_s=1000.0))
    for _ in range(10):
        p.observe_gap("edit", 1.0)
    assert 1.0 < p.ttl("edit", 2000, 10, 100, pressure=1.0) < 1.5
    for i in range(2 * MAX_TOOLS):
        p.observe_gap(f"name-{i}", 30.0)
    assert len(p.stats.tools) == MAX_TOOLS and "edit" not in p.stats.tools
    assert p.ttl("edit", 2000, 10, 100, pressure=1.0) == 2.0


def test_without_data_pins_for_the_default_or_the_prior() -> None:
    p = TtlPolicy(EngineConfig(default_ttl_s=2.0, tool_priors=(("run_test", 20.0),)))
    assert p.ttl("edit", 1000, 10, 100, pressure=1.0) == 2.0
    assert p.ttl("run_test", 1000, 10, 100, pressure=1.0) == 30.0


def test_short_reliable_gaps_get_a_ttl_just_above_them() -> None:
    p = TtlPolicy(EngineConfig(prefill_tok_per_s=1000.0))
    for _ in range(10):
        p.observe_gap("edit", 1.0)
    assert 1.0 < p.ttl("edit", 2000, 10, 100, pressure=1.0) < 1.5


def test_long_gaps_for_a_big_pin_under_pressure_are_not_pinned() -> None:
    p = TtlPolicy(EngineConfig(prefill_tok_per_s=100000.0, memory_price=1.0))
    for g in (30.0, 40.0, 50.0):
        p.observe_gap("run_test", g)
    assert p.ttl("run_test", 1000, 80, 100, pressure=1.0) == 0.0
    # the same pin is worth holding when memory is idle
    assert p.ttl("run_test", 1000, 80, 100, pressure=0.0) > 50.0


def test_ttl_covers_the_bulk_but_not_the_far_tail() -> None:
    p = TtlPolicy(EngineConfig(prefill_tok_per_s=1000.0, memory_price=1.0))
    for g in [1.0] * 9 + [100.0]:
        p.observe_gap("t", g)
    ttl = p.ttl("t", 2000, 50, 100, pressure=1.0)
    assert 1.0 < ttl < 100.0


def test_reuse_probability_is_conditional_on_elapsed_time() -> None:
    p = TtlPolicy(EngineConfig())
    for g in (1.0, 2.0, 3.0, 10.0):
        p.observe_gap("t", g)
    # 4 samples + one imaginary one spread over [0, 20]: 0.8 * 3/4 + 0.2 * 3.5/20
    assert p.reuse_probability("t", 0.0, 3.5) == pytest.approx(0.635)
    # given > 2.5 s: of {3, 10} only 3 is in time, plus the imaginary sample's share
    assert p.reuse_probability("t", 2.5, 3.5) == pytest.approx(0.21 / 0.575)
    assert p.reuse_probability("t", 4.0, 3.5) == 0.0


def test_a_tool_later_than_every_gap_scores_low_but_not_zero() -> None:
    p = TtlPolicy(EngineConfig())
    for _ in range(5):
        p.observe_gap("fast", 1.0)
    assert 0.0 < p.reuse_probability("fast", 1.1, 1.15) < 0.1
