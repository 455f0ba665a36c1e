"""Scheduler: chunked prefill, FCFS orders, preemption, pins (pure Python, no model).

The "sampled" token is a function of the position, so the scheduler is exercised alone.
"""

from __future__ import annotations

from harness.llm.engine.config import EngineConfig, Policy
from harness.llm.engine.scheduler import Scheduler
from harness.llm.engine.sequence import EngineRequest, SeqState, Sequence


def _req(n: int, max_tokens: int = 4, start: int = 100, **kw: object) -> EngineRequest:
    return EngineRequest(tuple(range(start, start + n)), max_tokens=max_tokens, **kw)  # type: ignore[arg-type]


def _step(s: Scheduler, now: float = 0.0) -> tuple[list[tuple[int, int, int]], list[Sequence]]:
    out = s.schedule(now)
    toks = [(it.start + it.num_tokens) % 50 + 1 if it.sample else None for it in out.items]
    done = s.postprocess(out, toks, now)
    return [(it.seq.seq_id, it.start, it.num_tokens) for it in out.items], done


def _drain(s: Scheduler, now: float = 0.0) -> list[Sequence]:
    done: list[Sequence] = []
    for _ in range(10_000):
        if not s.has_unfinished():
            return done
        done += _step(s, now)[1]
    raise AssertionError("scheduler did not finish")


def test_long_prompts_are_prefilled_in_chunks_and_decodes_go_first() -> None:
    s = Scheduler(EngineConfig(block_size=4, num_blocks=32, max_batched_tokens=8))
    s.add(0, _req(5, max_tokens=3), 0.0)
    assert _step(s)[0] == [(0, 0, 5)]
    s.add(1, _req(20, start=200), 0.0)
    assert _step(s)[0] == [(0, 5, 1), (1, 0, 7)]  # the decode, then a chunk of what is left
    assert _step(s)[0] == [(0, 6, 1), (1, 7, 7)]
    steps, done = _step(s)
    assert steps == [(1, 14, 6)] and [d.seq_id for d in done] == []
    assert len(s.running[0].token_ids) == 21


def test_preemption_under_memory_pressure_never_loses_a_request() -> None:
    s = Scheduler(
        EngineConfig(
            block_size=2, num_blocks=12, max_batched_tokens=64, policy="lru", reserve_decode=False
        )
    )
    for i in range(5):
        s.add(i, _req(6, max_tokens=8, start=10 * i), float(i))
    done = _drain(s)
    assert sorted(d.seq_id for d in done) == [0, 1, 2, 3, 4]
    assert all(len(d.generated) == 8 and d.finish_reason == "length" for d in done)
    assert s.stats.preemptions > 0
    assert s.stats.recomputed_tokens > 0  # preempted work is recomputed, and counted
    assert s.bm.num_free == 12


def test_request_fcfs_versus_program_fcfs() -> None:
    orders = {}
    policy: Policy
    for policy in ("lru", "ttl"):
        s = Scheduler(
            EngineConfig(
                block_size=4,
                num_blocks=64,
                max_num_seqs=1,
                policy=policy,
                default_ttl_s=0.5,
                min_ttl_s=0.1,
            )
        )
        s.add(0, _req(4, max_tokens=1, program_id="A"), 0.0)
        _drain(s, 0.0)
        s.expire_pins(10.0)  # A's pin is gone; only its first arrival (t=0) still counts
        s.add(1, _req(4, max_tokens=1, start=300, program_id="B"), 1.0)
        s.add(2, _req(8, max_tokens=1, program_id="A"), 2.0)
        orders[policy] = [seq_id for seq_id, *_ in _step(s, 10.0)[0]]
    assert orders == {"lru": [1], "ttl": [2]}


def test_pinned_programs_go_first() -> None:
    cfg = EngineConfig(block_size=4, num_blocks=64, max_num_seqs=1, prefill_tok_per_s=1.0)
    s = Scheduler(cfg)
    s.add(0, _req(4, max_tokens=1, program_id="old"), 0.0)
    s.add(1, _req(4, max_tokens=1, start=300, program_id="young"), 1.0)
    _drain(s, 1.0)
    s.expire_pins(100.0)
    s.add(2, _req(4, max_tokens=1, start=500, program_id="young"), 100.0)
    s.add(3, _req(4, max_tokens=1, start=700, program_id="young2"), 100.0)
    _drain(s, 100.0)  # young's next turn is pinned now
    s.add(4, _req(8, max_tokens=1, program_id="old"), 100.5)
    s.add(5, _req(9, max_tokens=1, start=500, program_id="young"), 100.5)
    assert [i for i, *_ in _step(s, 100.5)[0]] == [5]


def test_a_pin_carries_the_whole_context_into_the_next_turn() -> None:
    s = Scheduler(EngineConfig(block_size=4, num_blocks=32, policy="ttl"))
    first = s.add(0, _req(5, max_tokens=3, program_id="p", next_tool="edit"), 0.0)
    _drain(s, 0.0)
    assert "p" in s.pins and s.pins["p"].num_computed == 7  # 5 prompt + 3 generated - 1
    nxt = [*first.token_ids, 7, 7, 7]
    second = s.add(1, EngineRequest(tuple(nxt), max_tokens=2, program_id="p"), 1.0)
    _step(s, 1.0)
    assert second.num_cached == 7  # one full block by hash, the partial second from the pin
    assert "p" not in s.pins and s.stats.pin_hits == 1 and s.stats.recomputed_tokens == 0
    _drain(s, 1.0)


def test_pins_expire_and_last_turns_do_not_pin() -> None:
    s = Scheduler(EngineConfig(block_size=4, num_blocks=32, policy="ttl", default_ttl_s=2.0))
    s.add(0, _req(6, program_id="p"), 0.0)
    s.add(1, _req(6, start=300, program_id="q", last_turn=True), 0.0)
    _drain(s, 0.0)
    assert list(s.pins) == ["p"]
    s.expire_pins(1.9)
    assert "p" in s.pins
    s.expire_pins(2.1)
    assert not s.pins and s.stats.pins_expired == 1 and s.bm.num_used == 0


def test_pressure_drops_the_pin_least_likely_to_return_first() -> None:
    cfg = EngineConfig(
        block_size=2,
        num_blocks=12,
        policy="ttl",
        max_ttl_s=100.0,
        prefill_tok_per_s=1.0,
        reserve_decode=False,
    )
    s = Scheduler(cfg)
    for _ in range(5):
        s.ttl.observe_gap("fast", 1.0)
        s.ttl.observe_gap("slow", 50.0)
    s.ttl.observe_gap("slow", 1.0)
    s.add(0, _req(4, max_tokens=1, program_id="f", next_tool="fast"), 0.0)
    s.add(1, _req(4, max_tokens=1, start=300, program_id="s", next_tool="slow"), 0.0)
    _drain(s, 0.0)
    assert set(s.pins) == {"f", "s"}
    # At t=1.1 "fast" is overdue (its gaps are all 1 s) while "slow" still expects to return.
    s.add(2, _req(18, max_tokens=4, start=600), 1.1)
    _step(s, 1.1)
    assert set(s.pins) == {"s"} and s.stats.pins_evicted == 1


def test_waiting_requests_only_evict_pins_worth_less_than_their_memory() -> None:
    cfg = EngineConfig(
        block_size=2,
        num_blocks=8,
        policy="ttl",
        prefill_tok_per_s=1.0,
        max_ttl_s=100.0,
        reserve_decode=False,
    )
    s = Scheduler(cfg)
    for _ in range(4):
        s.ttl.observe_gap("t", 5.0)
    s.add(0, _req(6, max_tokens=1, program_id="p", next_tool="t"), 0.0)
    s.add(1, _req(2, max_tokens=50, start=300), 0.0)
    _step(s, 0.0)
    assert "p" in s.pins  # 3 blocks pinned, 2 running
    s.add(2, _req(11, max_tokens=1, start=600), 0.1)
    _step(s, 0.1)
    assert s.waiting and "p" in s.pins  # something still runs: the valuable pin stays
    s.abort(1)
    _step(s, 0.2)
    assert not s.waiting and "p" not in s.pins  # nothing runs: the pin yields


def test_policy_none_recomputes_everything() -> None:
    for policy in ("none", "lru"):
        s = Scheduler(EngineConfig(block_size=4, num_blocks=32, policy=policy))
        s.add(0, _req(9, max_tokens=1, program_id="p"), 0.0)
        _drain(s)
        s.add(1, _req(12, max_tokens=1, program_id="p"), 1.0)
        _drain(s, 1.0)
        assert s.stats.cached_tokens == 8 if policy == "lru" else s.stats.cached_tokens == 0
        assert s.stats.recomputed_tokens == 9 - (8 if policy == "lru" else 0)


def test_abort_frees_everything() -> None:
    s = Scheduler(EngineConfig(block_size=4, num_blocks=8))
    s.add(0, _req(9), 0.0)
    _step(s)
    seq = s.abort(0)
    assert seq is not None and seq.state is SeqState.FINISHED and s.bm.num_used == 0


def test_reserving_decode_room_avoids_preemption() -> None:
    s = Scheduler(EngineConfig(block_size=2, num_blocks=12, max_batched_tokens=64, policy="lru"))
    for i in range(5):
        s.add(i, _req(6, max_tokens=8, start=10 * i), float(i))
    done = _drain(s)
    assert len(done) == 5 and s.stats.preemptions == 0 and s.stats.recomputed_tokens == 0


def test_a_claimed_pin_outlives_its_ttl_until_admission() -> None:
    s = Scheduler(EngineConfig(block_size=4, num_blocks=32, policy="ttl", default_ttl_s=2.0))
    first = s.add(0, _req(9, max_tokens=2, program_id="p"), 0.0)
    _drain(s, 0.0)
    second = s.add(1, EngineRequest((*first.token_ids, 1, 2), max_tokens=1, program_id="p"), 1.0)
    s.expire_pins(50.0)  # the turn arrived in time: the pin is claimed, not expired
    assert "p" in s.pins
    _step(s, 50.0)
    assert second.num_cached == 10 and not s.pins


def test_programs_that_never_finish_are_forgotten() -> None:
    s = Scheduler(EngineConfig(block_size=4, num_blocks=64, policy="lru", max_programs=3))
    for i in range(6):
        s.add(i, _req(4, max_tokens=1, start=10 * i, program_id=f"p{i}"), float(i))
        _drain(s, float(i))
    assert sorted(s.programs) == ["p3", "p4", "p5"]


def test_the_deciding_parts_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import harness.llm.engine.scheduler, harness.llm.engine.kv, "
        "harness.llm.engine.ttl, harness.llm.engine.plan, harness.llm.engine.clock, "
        "harness.llm.engine.conformal, harness.llm.engine.spec_policy, harness.llm.engine.load, "
        "harness.llm.engine.suffix, harness.llm.stops; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
