"""Greedy output equals transformers' `generate`, token for token, under every engine feature.

Real tiny random-init models (Qwen2 and Llama classes) in float32 on CPU: prefix reuse,
chunked prefill, mixed decode/prefill batches, preemption, pins across turns, CPU offload.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.llm.engine.config import EngineConfig
from harness.llm.engine.engine import Engine, RequestOutput
from harness.llm.engine.runner import ModelRunner, kv_bytes_per_block
from harness.llm.engine.sequence import EngineRequest
from tests.llm.engine.conftest import VOCAB, greedy_reference, tiny_model


def _prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def _engine(model: Any, **kw: Any) -> Engine:
    cfg = EngineConfig(**kw)
    return Engine(ModelRunner(model, cfg), cfg, adapt_prefill_rate=False)


def _run(engine: Engine, prompts: list[list[int]], n: int, **kw: Any) -> list[RequestOutput]:
    ids = [engine.add_request(EngineRequest(tuple(p), max_tokens=n, **kw)) for p in prompts]
    done = {o.request_id: o for o in engine.run_until_done()}
    return [done[i] for i in ids]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_batched_chunked_prefix_shared_matches_generate(arch: str) -> None:
    model = tiny_model(arch)
    prompts = _prompts(1, [5, 17, 40, 9, 3])
    prompts.append([*prompts[2][:24], 1, 2, 3])  # shares 6 blocks with prompt 2
    prompts.append(list(prompts[1]))  # identical prompt: all but the last token cached
    engine = _engine(model, block_size=4, num_blocks=128, max_batched_tokens=16, policy="lru")
    outs = _run(engine, prompts[:5], 10)
    outs += _run(engine, prompts[5:], 10)
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 10)
    assert outs[5].cached_tokens == 24 and outs[6].cached_tokens == 16
    assert engine.scheduler_stats.prefill_tokens < sum(len(p) for p in prompts)


def test_preemption_keeps_outputs_exact() -> None:
    model = tiny_model()
    prompts = _prompts(2, [12, 15, 9, 14, 11])
    engine = _engine(
        model,
        block_size=4,
        num_blocks=14,
        max_batched_tokens=32,
        policy="lru",
        reserve_decode=False,
    )
    outs = _run(engine, prompts, 12)
    assert engine.scheduler_stats.preemptions > 0
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 12)


@pytest.mark.parametrize("policy", ["none", "lru", "ttl"])
def test_multi_turn_programs_match_generate_under_each_policy(policy: str) -> None:
    model = tiny_model()
    engine = _engine(model, block_size=4, num_blocks=64, max_batched_tokens=24, policy=policy)
    contexts = {pid: p for pid, p in zip("ab", _prompts(3, [10, 7]), strict=True)}
    tool_out = _prompts(4, [6, 9, 5, 11])
    for turn in range(2):
        ids = {
            pid: engine.add_request(
                EngineRequest(
                    tuple(ctx),
                    max_tokens=6,
                    program_id=pid,
                    last_turn=turn == 1,
                    next_tool="run_test",
                )
            )
            for pid, ctx in contexts.items()
        }
        done = {o.request_id: o for o in engine.run_until_done()}
        for pid, rid in ids.items():
            assert list(done[rid].token_ids) == greedy_reference(model, contexts[pid], 6)
            contexts[pid] = contexts[pid] + list(done[rid].token_ids) + tool_out.pop()
    stats = engine.scheduler_stats
    if policy == "ttl":
        assert stats.pin_hits == 2 and stats.recomputed_tokens == 0
    elif policy == "none":
        assert stats.recomputed_tokens == (10 + 6 - 1) + (7 + 6 - 1)


def test_offloaded_pins_come_back_exact() -> None:
    model = tiny_model()
    engine = _engine(
        model, block_size=4, num_blocks=12, num_cpu_blocks=32, max_batched_tokens=64, policy="ttl"
    )
    first = _prompts(5, [18])[0]
    out = _run(engine, [first], 5, program_id="p", next_tool="t")[0]
    # Another program fills the device; the pin is evicted under pressure, to the CPU tier.
    other = _run(engine, _prompts(6, [36]), 4)
    assert engine.scheduler_stats.pins_evicted == 1 and engine.scheduler.bm.offloaded > 0
    assert list(other[0].token_ids) == greedy_reference(model, _prompts(6, [36])[0], 4)
    second = first + list(out.token_ids) + [7, 8, 9]
    back = _run(engine, [second], 6, program_id="p", last_turn=True)[0]
    assert engine.scheduler.bm.restored > 0 and back.cached_tokens >= 16
    assert list(back.token_ids) == greedy_reference(model, second, 6)


def test_stop_tokens_and_lengths() -> None:
    model = tiny_model()
    prompt = _prompts(7, [8])[0]
    ref = greedy_reference(model, prompt, 8)
    engine = _engine(model, block_size=4, num_blocks=32)
    stop = _run(engine, [prompt], 8, stop_token_ids=frozenset({ref[3]}))[0]
    k = ref.index(ref[3])
    assert list(stop.token_ids) == ref[: k + 1] and stop.finish_reason == "stop"
    length = _run(engine, [prompt], 5)[0]
    assert list(length.token_ids) == ref[:5] and length.finish_reason == "length"


def test_static_decode_path_matches_generate() -> None:
    """The padded decode step that CUDA graphs capture, run eagerly on CPU."""
    model = tiny_model()
    prompts = _prompts(11, [9, 20, 33])
    engine = _engine(model, block_size=4, num_blocks=64, static_decode=True)
    runner = engine.runner
    assert isinstance(runner, ModelRunner)
    outs = _run(engine, prompts, 10)
    assert runner.static_steps > 0
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 10)


@pytest.mark.slow
def test_compiled_decode_matches_generate() -> None:
    model = tiny_model()
    prompts = _prompts(11, [9, 20, 33])
    outs = _run(_engine(model, block_size=4, num_blocks=64, compile_decode=True), prompts, 10)
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 10)


def test_kv_bytes_per_block() -> None:
    # 2 layers x (K, V) x 16 slots x 2 KV heads x 16 dims x 4 bytes (float32)
    assert kv_bytes_per_block(tiny_model(), 16) == 2 * 2 * 16 * 2 * 16 * 4
