"""Token-level speculative decoding: greedy output equals transformers' `generate`, token for
token, with a self-draft or a separate draft model, under every engine feature (chunked
prefill, mixed batches, prefix reuse, preemption, pins, the CPU tier, the padded static step)
and the block books stay exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.engine import Engine, RequestOutput
from harness.llm.engine.sequence import EngineRequest
from harness.llm.engine.speculative import SpeculativeRunner, speculative_runner
from tests.llm.engine.conftest import VOCAB, greedy_reference, near_model, noisy_copy


def _prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def _engine(
    model: Any, draft: str = "self", k: int = 3, adaptive: bool = True, **kw: Any
) -> Engine:
    cfg = EngineConfig(**kw)
    draft_model = {"self": None, "copy": noisy_copy(model, 0.0), "noisy": noisy_copy(model, 1.0)}
    runner = speculative_runner(
        model,
        cfg,
        SpecConfig(k=k, adaptive=adaptive, cost_ratio=0.1),
        draft_model=draft_model[draft],
        self_draft_layers=2,
    )
    return Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)


def _run(engine: Engine, prompts: list[list[int]], n: int, **kw: Any) -> list[RequestOutput]:
    ids = [engine.add_request(EngineRequest(tuple(p), max_tokens=n, **kw)) for p in prompts]
    done = {o.request_id: o for o in engine.run_until_done()}
    return [done[i] for i in ids]


def _spec(engine: Engine) -> SpeculativeRunner:
    assert isinstance(engine.runner, SpeculativeRunner)
    return engine.runner


@pytest.mark.parametrize("draft", ["self", "copy", "noisy"])
@pytest.mark.parametrize("static", [False, True])
def test_greedy_equals_generate_with_shared_prefixes_and_chunks(draft: str, static: bool) -> None:
    model = near_model(0.3)
    prompts = _prompts(1, [5, 17, 40, 9, 3])
    prompts.append([*prompts[2][:24], 1, 2, 3])  # shares 6 blocks with prompt 2
    prompts.append(list(prompts[1]))  # identical: all but the last token cached
    engine = _engine(
        model,
        draft,
        block_size=4,
        num_blocks=128,
        max_batched_tokens=24,
        policy="lru",
        static_decode=static,
    )
    outs = _run(engine, prompts[:5], 16) + _run(engine, prompts[5:], 16)
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 16)
    assert outs[5].cached_tokens == 24 and outs[6].cached_tokens == 16
    stats = _spec(engine).stats()
    assert stats.drafted > 0 and stats.draft_tokens == stats.accepted
    assert stats.draft_tokens + stats.target_tokens == sum(len(o.token_ids) for o in outs)
    if draft == "copy":
        assert stats.acceptance_rate == 1.0  # the lagging-draft path: every draft accepted
    else:
        assert 0.0 < stats.acceptance_rate < 1.0
    assert engine.scheduler.bm.num_free == 128  # nothing leaked (lru keeps blocks cached)
    if static:
        assert _spec(engine).target.static_steps > 0


@pytest.mark.parametrize("draft", ["self", "copy"])
def test_preemption_under_speculation_keeps_outputs_exact(draft: str) -> None:
    model = near_model(0.3)
    prompts = _prompts(2, [12, 15, 9, 14, 11])
    engine = _engine(
        model,
        draft,
        k=4,
        block_size=4,
        num_blocks=16,
        max_batched_tokens=48,
        policy="lru",
        reserve_decode=False,
    )
    outs = _run(engine, prompts, 14)
    assert engine.scheduler_stats.preemptions > 0
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 14)
    assert engine.scheduler.bm.num_free == 16


@pytest.mark.parametrize("draft", ["self", "copy"])
def test_pinned_turns_under_speculation(draft: str) -> None:
    model = near_model(0.3)
    engine = _engine(model, draft, block_size=4, num_blocks=64, max_batched_tokens=32)
    contexts = dict(zip("ab", _prompts(3, [10, 7]), strict=True))
    tool_out = _prompts(4, [6, 9, 5, 11])
    for turn in range(2):
        ids = {
            pid: engine.add_request(
                EngineRequest(
                    tuple(ctx), max_tokens=9, program_id=pid, last_turn=turn == 1, next_tool="t"
                )
            )
            for pid, ctx in contexts.items()
        }
        done = {o.request_id: o for o in engine.run_until_done()}
        for pid, rid in ids.items():
            assert list(done[rid].token_ids) == greedy_reference(model, contexts[pid], 9)
            contexts[pid] = contexts[pid] + list(done[rid].token_ids) + tool_out.pop()
    assert engine.scheduler_stats.pin_hits == 2 and engine.scheduler_stats.recomputed_tokens == 0
    assert engine.scheduler.bm.num_free == 64 and not engine.scheduler.pins


def test_pins_through_the_cpu_tier_keep_both_caches() -> None:
    """A separate draft keeps its own KV in the same blocks: offload copies it too."""
    model = near_model(0.3)
    engine = _engine(
        model,
        "noisy",
        block_size=4,
        num_blocks=14,
        num_cpu_blocks=32,
        max_batched_tokens=64,
        policy="ttl",
    )
    first = _prompts(5, [18])[0]
    out = _run(engine, [first], 7, program_id="p", next_tool="t")[0]
    other = _prompts(6, [36])[0]
    assert list(_run(engine, [other], 4)[0].token_ids) == greedy_reference(model, other, 4)
    assert engine.scheduler_stats.pins_evicted == 1 and engine.scheduler.bm.offloaded > 0
    accepted_before = _spec(engine).stats().accepted
    second = first + list(out.token_ids) + [7, 8, 9]
    back = _run(engine, [second], 12, program_id="p", last_turn=True)[0]
    assert engine.scheduler.bm.restored > 0 and back.cached_tokens >= 16
    assert list(back.token_ids) == greedy_reference(model, second, 12)
    assert _spec(engine).stats().accepted > accepted_before  # the restored draft KV works


def test_a_stop_token_inside_accepted_drafts_ends_the_output_there() -> None:
    model = near_model(0.3)
    prompt = _prompts(7, [8])[0]
    ref = greedy_reference(model, prompt, 16)
    engine = _engine(model, "copy", k=6, block_size=4, num_blocks=32)
    stop = _run(engine, [prompt], 16, stop_token_ids=frozenset({ref[5]}))[0]
    assert list(stop.token_ids) == ref[: ref.index(ref[5]) + 1]
    assert stop.finish_reason == "stop"
    length = _run(engine, [prompt], 5)[0]
    assert list(length.token_ids) == ref[:5] and length.finish_reason == "length"
    assert engine.scheduler.bm.num_free == 32


def test_llama_self_draft() -> None:
    model = near_model(0.3, arch="llama")
    prompts = _prompts(8, [6, 13])
    outs = _run(_engine(model, "self", block_size=4, num_blocks=64), prompts, 12)
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 12)


def test_adaptive_k_grows_with_agreement_and_shrinks_without() -> None:
    good = _engine(near_model(0.3), "copy", k=6, block_size=4, num_blocks=64)
    _run(good, _prompts(9, [6, 9]), 60)
    bad = _engine(near_model(1.0), "noisy", k=6, block_size=4, num_blocks=64)
    bad_outs = _run(bad, _prompts(9, [6, 9]), 60)
    g, b = _spec(good).stats(), _spec(bad).stats()
    # From the prior (k = 3 at an assumed 60% acceptance) up to the cap of 6, or down to 0
    # with a k = 1 probe every few rounds.
    assert g.drafted / g.rounds > 5.0 and g.acceptance_rate == 1.0
    assert b.drafted / b.rounds < 1.5 and b.acceptance_rate < 0.3
    assert sum(len(o.token_ids) for o in bad_outs) == 120
