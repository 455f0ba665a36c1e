"""The scheduler under speculation (pure Python): room for drafts, exact rollback of the
blocks that held rejected tokens, multi-token appends with stops, and exact block books
through prefix sharing, pins and preemption, whatever the acceptance pattern.

The "model" here is a rule: the token at position p is `p % 50 + 1` when accepted, and a
row accepts a random number of its drafts (hypothesis draws the pattern).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.llm.engine.config import EngineConfig
from harness.llm.engine.kv import prefix_hashes
from harness.llm.engine.plan import Accepted, SchedulerOutput
from harness.llm.engine.scheduler import Scheduler
from harness.llm.engine.sequence import EngineRequest, Sequence


def _tok(pos: int) -> int:
    return pos % 50 + 1


def _results(out: SchedulerOutput, rng: random.Random, lag: bool) -> list[int | Accepted | None]:
    res: list[int | Accepted | None] = []
    for it in out.items:
        end = it.start + it.num_tokens  # position of the first drafted token
        if not it.spec:
            res.append(_tok(end) if it.sample else None)
            continue
        m = rng.randint(0, it.draft)
        tokens = (*(_tok(end + j) for j in range(m)), _tok(end + m) + 100)
        computed = end + (min(m, max(it.draft - 1, 0)) if lag else m)
        res.append(Accepted(tokens, computed))
    return res


def _check_books(s: Scheduler) -> None:
    holders: Counter[int] = Counter()
    for seq in s.running:
        holders.update(seq.block_table)
        assert len(seq.block_table) >= -(-seq.num_computed // s.config.block_size)
        # Only blocks of accepted tokens are ever named: the chain matches the tokens.
        bs = s.config.block_size
        assert seq.block_hashes == prefix_hashes(seq.token_ids, bs, len(seq.block_hashes) * bs)
    for pin in s.pins.values():
        holders.update(pin.blocks)
    assert all(s.bm.ref[b] == holders[b] for b in range(s.config.num_blocks))
    assert s.bm.num_free == s.config.num_blocks - len(holders)


def _run(s: Scheduler, rng: random.Random, lag: bool) -> list[Sequence]:
    done: list[Sequence] = []
    for step in range(2000):
        if not s.has_unfinished():
            return done
        out = s.schedule(float(step))
        for it in out.items:
            cap = it.seq.prompt_len + it.seq.request.max_tokens
            assert it.start + it.num_tokens + it.draft <= cap  # drafts stay in the reservation
            covered = len(it.seq.block_table) * s.config.block_size
            assert it.start + it.num_tokens + it.draft <= covered
        done += s.postprocess(out, _results(out, rng, lag), float(step))
        _check_books(s)
    raise AssertionError("did not finish")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 6),
    lag=st.booleans(),
    policy=st.sampled_from(["none", "lru", "ttl"]),
    reserve=st.booleans(),
    num_blocks=st.integers(14, 40),
)
def test_books_stay_exact_under_any_acceptance_pattern(
    seed: int, k: int, lag: bool, policy: str, reserve: bool, num_blocks: int
) -> None:
    rng = random.Random(seed)
    cfg = EngineConfig(
        block_size=2,
        num_blocks=num_blocks,
        max_batched_tokens=24,
        policy=policy,  # type: ignore[arg-type]
        reserve_decode=reserve,
    )
    s = Scheduler(cfg, eos_token_ids=(), draft_len=lambda seq: k)
    base = [rng.randint(200, 300) for _ in range(6)]
    for i in range(5):
        prompt = tuple(base[: rng.randint(2, 6)]) + tuple(rng.randint(200, 300) for _ in range(2))
        stop = frozenset({_tok(rng.randint(8, 20)) + 100}) if i == 0 else frozenset()
        req = EngineRequest(
            prompt,
            max_tokens=rng.randint(1, 12),
            stop_token_ids=stop,
            program_id=f"p{i % 2}",
            next_tool="t",
        )
        s.add(i, req, 0.0)
    done = _run(s, rng, lag)
    assert sorted(d.seq_id for d in done) == list(range(5))
    for d in done:
        assert 1 <= len(d.generated) <= d.request.max_tokens
        if d.finish_reason == "stop":
            assert d.generated[-1] in d.request.stop_token_ids
    for pid in list(s.pins):
        s._release_pin(s.pins[pid], offload=False)
    assert s.bm.num_free == num_blocks


def test_drafts_are_capped_by_max_tokens_the_window_and_the_budget() -> None:
    cfg = EngineConfig(block_size=4, num_blocks=64, max_batched_tokens=10, max_model_len=14)
    s = Scheduler(cfg, draft_len=lambda seq: 8)
    s.add(0, EngineRequest((1, 2, 3), max_tokens=5), 0.0)
    s.add(1, EngineRequest((4, 5, 6, 7, 8, 9), max_tokens=20), 0.0)
    out = s.schedule(0.0)
    assert [(it.spec, it.draft) for it in out.items] == [(False, 0), (False, 0)]  # prefills
    s.postprocess(out, [9, 9], 0.0)
    out = s.schedule(0.0)
    # Seq 0 may draft 4 (5 - 1 generated); the 10-token budget leaves seq 1 four drafts.
    assert [(it.seq.seq_id, it.num_tokens, it.draft) for it in out.items] == [(0, 1, 4), (1, 1, 4)]
    done = s.postprocess(out, [Accepted((9, 9, 9, 9, 9), 8), Accepted((9,), 7)], 0.0)
    assert [d.seq_id for d in done] == [0] and len(done[0].generated) == 5  # cut at max_tokens
    seq = s.running[0]
    assert seq.num_computed == 7 and len(seq.block_table) == 2
    out = s.schedule(0.0)
    assert [(it.seq.seq_id, it.draft) for it in out.items] == [(1, 6)]  # window: 14 - 8 tokens


def test_rejected_drafts_give_their_blocks_back() -> None:
    cfg = EngineConfig(block_size=2, num_blocks=20, max_batched_tokens=64, policy="lru")
    s = Scheduler(cfg, draft_len=lambda seq: 6)
    s.add(0, EngineRequest((1, 2, 3), max_tokens=30), 0.0)
    s.postprocess(s.schedule(0.0), [7], 0.0)
    out = s.schedule(0.0)
    (it,) = out.items
    assert (it.start, it.num_tokens, it.draft) == (3, 1, 6)
    assert len(it.seq.block_table) == 5  # positions 0..9
    s.postprocess(out, [Accepted((8, 9), 5)], 0.0)  # one draft accepted, one correction
    seq = s.running[0]
    assert seq.token_ids == [1, 2, 3, 7, 8, 9] and seq.num_computed == 5
    assert len(seq.block_table) == 3 and s.bm.num_free == 17
    # A row that appends nothing (a step to redraw) keeps its last token pending.
    s.postprocess(s.schedule(0.0), [Accepted((), 6)], 0.0)
    assert seq.num_computed == 5 and seq.num_tokens == 6
