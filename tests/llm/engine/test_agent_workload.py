"""The agent-workload replayer, scaled down: real tiny model, simulated clock, exact accounting."""

from __future__ import annotations

from typing import Any

from benchmarks import agent_workload as aw
from harness.llm.engine.clock import ManualClock
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.engine import Engine, ForwardHook
from harness.llm.engine.runner import ModelRunner
from tests.llm.engine.conftest import tiny_model

SPEC = aw.WorkloadSpec(
    programs=3,
    turns=3,
    system_tokens=64,
    tool_tokens=(16, 64),
    gen_tokens=(4, 8),
    pause_scale=0.05,
    vocab=300,
    seed=1,
    # The engine properties below are checked on a fixed tool model, not on whatever
    # results/tool_gaps.json holds (re-measuring it must not change this test).
    tools=tuple((name, median, sigma, 1) for name, (median, sigma) in aw.FALLBACK_TOOLS.items()),
)


def _factory(model: Any) -> aw.EngineFactory:
    def make(config: EngineConfig, clock: ManualClock, hook: ForwardHook) -> Engine:
        runner = ModelRunner(model, config)
        return Engine(runner, config, clock=clock, on_forward=hook, adapt_prefill_rate=False)

    return make


def test_workload_shape_is_reproducible() -> None:
    a, b = aw.generate(SPEC), aw.generate(SPEC)
    assert a == b and len(a) == 3 and all(len(p.turns) == 3 for p in a)
    assert all(p.turns[-1].tool is None and p.turns[0].tool is not None for p in a)
    assert all(4 <= t.gen_tokens <= 8 for p in a for t in p.turns)


def test_ttl_recomputes_less_than_none_and_the_books_balance() -> None:
    programs = aw.generate(SPEC)
    live = aw.live_context_tokens(programs)
    base = EngineConfig(
        block_size=4,
        num_blocks=int(0.8 * live / 4),
        max_batched_tokens=64,
        num_cpu_blocks=live // 4,
        prefill_tok_per_s=2000.0,
    )
    cost = aw.linear_cost(0.01, 1e-3)
    res = aw.compare(programs, base, _factory(tiny_model()), step_cost=cost)
    none, lru, ttl, off = res["none"], res["lru"], res["ttl"], res["ttl+offload"]
    gen = sum(t.gen_tokens for p in programs for t in p.turns)
    prompts = 0
    previous = 0  # tokens the engine computed for the program in its previous turn
    for p in programs:
        ctx = 0
        for i, t in enumerate(p.turns):
            ctx += len(t.new_tokens)
            prompts += ctx
            if i:
                previous += ctx - len(t.new_tokens) - 1
            ctx += t.gen_tokens
    for r in res.values():
        assert r.generated_tokens == gen and r.preemptions == 0
        assert r.prefill_tokens + r.cached_tokens == prompts
    assert none.prefill_tokens == prompts and none.prefill_recomputed == previous
    assert ttl.prefill_recomputed < lru.prefill_recomputed <= none.prefill_recomputed
    assert off.prefill_recomputed <= ttl.prefill_recomputed
    assert ttl.pins_created > 0 and 0.0 < ttl.pin_hit_rate <= 1.0
    assert all(r.mean_jct_s > 0 and r.p90_jct_s >= r.mean_jct_s * 0.5 for r in res.values())
    # The simulated clock is deterministic: a second run gives the same books.
    again = aw.replay(
        programs, aw.variant_config(base, "ttl"), _factory(tiny_model()), step_cost=cost
    )
    assert again.prefill_recomputed == ttl.prefill_recomputed
    assert again.mean_jct_s == ttl.mean_jct_s


def test_policy_simulation_runs_without_a_model() -> None:
    from benchmarks import policy_sim

    programs = aw.generate(replace_spec(programs=4, system_tokens=400, tool_tokens=(50, 300)))
    live = aw.live_context_tokens(programs)
    base = EngineConfig(
        block_size=16, num_blocks=int(0.4 * live / 16) + 40, num_cpu_blocks=live // 16
    )
    none = policy_sim.simulate(programs, aw.variant_config(base, "none"))
    off = policy_sim.simulate(programs, aw.variant_config(base, "ttl+offload"))
    assert none["prefill_recomputed"] > off["prefill_recomputed"]
    assert none["mean_jct_s"] > 0 and off["busy_s"] > 0


def replace_spec(**kw: Any) -> aw.WorkloadSpec:
    from dataclasses import replace

    return replace(SPEC, **kw)


def test_the_default_tool_pauses_are_the_measured_gaps() -> None:
    import json

    data = json.loads(aw.GAPS_JSON.read_text())["tools"]
    assert set(aw.TOOLS) == set(data) and aw.TOOLS_SOURCE.startswith("measured")
    for name, (median, sigma) in aw.TOOLS.items():
        assert (median, sigma) == (data[name]["median_s"], data[name]["lognormal_sigma"])
    programs = aw.generate(aw.WorkloadSpec(programs=20, turns=4, seed=3))
    used = {t.tool for p in programs for t in p.turns if t.tool}
    assert used <= set(data) and used
