"""A failing engine step fails only its own requests; the engine goes on serving, says when
it cannot (`health()`), and bad seeds are refused before they reach a step."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import LLMError
from harness.llm.base import ChatRequest, Message, Sampling
from harness.llm.engine.client import UNHEALTHY_AFTER, EngineLLM
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.engine import Engine, StepError
from harness.llm.engine.runner import ModelRunner
from harness.llm.engine.sequence import EngineRequest
from tests.fixtures.faults import (
    POISON,
    BreakableClock,
    InjectedFault,
    Poison,
    hook,
    poison_prompt,
)
from tests.llm.engine.conftest import greedy_reference, tiny_model

CFG = EngineConfig(block_size=8, num_blocks=64, max_batched_tokens=64, max_model_len=400)
TOO_BIG_SEED = 1180591620717411303424  # 2**70, the seed of issue 13
POISON_ID = 3  # a token id of the tiny model (its vocabulary is made up)


def _req(text: str, n: int = 6, **sampling: Any) -> ChatRequest:
    return ChatRequest((Message("user", text),), sampling=Sampling(max_tokens=n, **sampling))


def test_a_failed_step_fails_only_the_requests_in_it() -> None:
    """A real fault in a real step: the model's forward pass raises on the bad request's
    prompt. One sequence runs at a time, so the bystander waits outside the failing step and
    must come out intact."""
    model = tiny_model()
    expected = greedy_reference(model, [6, 7, 8, 9], 5)
    handle = hook(model, Poison(POISON_ID))
    cfg = EngineConfig(block_size=8, num_blocks=64, max_num_seqs=1, max_model_len=400)
    engine = Engine(ModelRunner(model, cfg), cfg, adapt_prefill_rate=False)
    bad = engine.add_request(EngineRequest((1, POISON_ID, POISON_ID, POISON_ID), max_tokens=4))
    good = engine.add_request(EngineRequest((6, 7, 8, 9), max_tokens=5))
    with pytest.raises(StepError) as caught:
        engine.step()
    assert [o.request_id for o in caught.value.failed] == [bad]
    assert isinstance(caught.value.__cause__, InjectedFault)
    (out,) = engine.run_until_done()
    assert out.request_id == good
    assert list(out.token_ids) == expected
    assert (engine.stats.failed_steps, engine.stats.failed_requests) == (1, 1)
    assert engine.scheduler.bm.num_free == cfg.num_blocks  # the failed request's blocks are back
    handle.remove()


def test_a_failed_step_that_moved_kv_blocks_is_not_survivable() -> None:
    """With blocks copied to the CPU tier in the failing step, the prefix cache's books may
    name KV that was never written: the error must stop the engine, not be isolated."""
    model = tiny_model()
    cfg = EngineConfig(
        block_size=4, num_blocks=12, num_cpu_blocks=32, max_batched_tokens=64, policy="ttl"
    )
    engine = Engine(ModelRunner(model, cfg), cfg, adapt_prefill_rate=False)
    engine.add_request(
        EngineRequest(tuple(range(1, 19)), max_tokens=5, program_id="p", next_tool="t")
    )
    engine.run_until_done()  # p's KV stays pinned
    # A long prompt evicts the pin to the CPU tier in the step that fails.
    handle = hook(model, Poison(POISON_ID))
    prompt = (*range(20, 53), POISON_ID, POISON_ID, POISON_ID)
    engine.add_request(EngineRequest(prompt, max_tokens=4))
    with pytest.raises(InjectedFault) as caught:
        engine.step()
    assert not isinstance(caught.value, StepError)
    handle.remove()
    assert engine.scheduler.bm.offloaded > 0 and engine.stats.failed_steps == 0


async def test_engine_llm_fails_the_poisoned_step_and_keeps_serving(tokenizer: Any) -> None:
    model = tiny_model()
    handle = hook(model, Poison(tokenizer.convert_tokens_to_ids(POISON)))
    async with EngineLLM(model, tokenizer, config=CFG) as llm:
        expected = (await llm.chat(_req("fix it"))).text
        with pytest.raises(LLMError, match=r"engine step serving this request failed.*injected"):
            await llm.chat(_req(poison_prompt()))
        assert llm.health() is None  # one failed step is the request's problem
        assert (await llm.chat(_req("fix it"))).text == expected
        assert llm.engine.stats.failed_requests == 1
        assert not llm.engine.has_unfinished()
    handle.remove()


async def test_steps_failing_in_a_row_make_the_engine_unhealthy_until_one_succeeds(
    tokenizer: Any,
) -> None:
    model = tiny_model()
    handle = hook(model, Poison(tokenizer.convert_tokens_to_ids(POISON)))
    async with EngineLLM(model, tokenizer, config=CFG) as llm:
        for _ in range(UNHEALTHY_AFTER):
            assert llm.health() is None
            with pytest.raises(LLMError):
                await llm.chat(_req(poison_prompt()))
        assert "engine steps failed" in (llm.health() or "")
        await llm.chat(_req("still serving"))
        assert llm.health() is None
    handle.remove()


async def test_a_seed_torch_cannot_take_is_refused_up_front(tokenizer: Any) -> None:
    async with EngineLLM(tiny_model(), tokenizer, config=CFG) as llm:
        with pytest.raises(LLMError, match=r"seed .* is out of range"):
            await llm.chat(_req("sample", temperature=1.0, seed=TOO_BIG_SEED))
        ok = await llm.chat(_req("sample", temperature=1.0, seed=(1 << 64) - 1))
        assert ok.usage.completion_tokens > 0
        assert llm.engine.stats.failed_steps == 0


async def test_a_dead_loop_says_so_and_refuses_work(tokenizer: Any) -> None:
    clock = BreakableClock()
    llm = EngineLLM(tiny_model(), tokenizer, config=CFG, clock=clock)
    await llm.chat(_req("fine"))
    assert llm.health() is None
    clock.broken = True
    with pytest.raises(LLMError, match="the engine loop failed"):
        await llm.chat(_req("breaks it"))
    assert "the engine loop failed" in (llm.health() or "")
    with pytest.raises(LLMError, match="the engine is closed"):
        await llm.chat(_req("after"))
    await llm.aclose()


async def test_closed_engine_is_unhealthy(tokenizer: Any) -> None:
    llm = EngineLLM(tiny_model(), tokenizer, config=CFG)
    await llm.aclose()
    assert llm.health() == "the engine is closed"
