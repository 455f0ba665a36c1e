"""EngineLLM behind the chat protocol: concurrency, stops, lengths, sampling, errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from harness.errors import ContextTooLong, LLMError
from harness.llm.base import LLM, ChatRequest, Message, Sampling
from harness.llm.engine.client import EngineLLM, encode_chat
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.load import EngineSettings, build_engine_llm
from harness.llm.engine.spec_policy import StepPolicy
from harness.llm.engine.speculative import SpeculativeRunner
from tests.llm.engine.conftest import greedy_reference, near_model, tiny_model

CFG = EngineConfig(block_size=8, num_blocks=64, max_batched_tokens=64, max_model_len=400)


def _req(text: str, n: int = 8, **kw: Any) -> ChatRequest:
    return ChatRequest((Message("user", text),), sampling=Sampling(max_tokens=n), **kw)


def _expected(model: Any, tokenizer: Any, req: ChatRequest) -> str:
    ids = greedy_reference(model, encode_chat(tokenizer, req.messages), req.sampling.max_tokens)
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
    return str(tokenizer.decode(ids, skip_special_tokens=True))


async def test_concurrent_programs_get_their_greedy_answers(tokenizer: Any) -> None:
    model = tiny_model()
    reqs = [_req(f"fix issue {i}", program_id=f"p{i}", next_tool="run_test") for i in range(4)]
    expected = [_expected(model, tokenizer, r) for r in reqs]
    async with EngineLLM(model, tokenizer, config=CFG, model_name="tiny") as llm:
        assert isinstance(llm, LLM) and llm.model_name == "tiny"
        outs = await asyncio.gather(*(llm.chat(r) for r in reqs))
        assert [o.text for o in outs] == expected
        for r, o in zip(reqs, outs, strict=True):
            assert o.usage.prompt_tokens == len(encode_chat(tokenizer, r.messages))
            assert o.usage.completion_tokens <= 8 and o.model == "tiny"
        # The next turn of p0 reuses its pinned context.
        follow = ChatRequest(
            (*reqs[0].messages, Message("assistant", outs[0].text), Message("user", "ok")),
            sampling=Sampling(max_tokens=4),
            program_id="p0",
            last_turn=True,
        )
        await llm.chat(follow)
        assert llm.engine.scheduler_stats.pin_hits == 1


async def test_stop_strings_and_length(tokenizer: Any) -> None:
    model = tiny_model()
    plain = _req("hello there", n=12)
    full = _expected(model, tokenizer, plain)
    async with EngineLLM(model, tokenizer, config=CFG) as llm:
        out = await llm.chat(plain)
        assert out.text == full
        if out.usage.completion_tokens == 12:
            assert out.finish_reason == "length"
        stop = full[4:6]
        cut = await llm.chat(_req("hello there", n=12, stop=(stop,)))
        assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"


async def test_seeded_sampling_is_reproducible(tokenizer: Any) -> None:
    async with EngineLLM(tiny_model(), tokenizer, config=CFG) as llm:
        s = Sampling(temperature=1.0, top_p=0.9, max_tokens=10, seed=7)
        req = ChatRequest((Message("user", "sample me"),), sampling=s)
        a, b = await asyncio.gather(llm.chat(req), llm.chat(req))
        c = await llm.chat(req)
        assert a.text == b.text == c.text


async def test_errors_cancel_and_close(tokenizer: Any) -> None:
    llm = EngineLLM(tiny_model(), tokenizer, config=CFG)
    with pytest.raises(ContextTooLong):
        await llm.chat(_req("x" * 500))
    task = asyncio.create_task(llm.chat(_req("long answer", n=300)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ok = await llm.chat(_req("still serving", n=3))
    assert ok.usage.completion_tokens <= 3
    await llm.aclose()
    with pytest.raises(LLMError):
        await llm.chat(_req("closed"))


async def test_speculative_engine_llm_keeps_greedy_answers_and_reports(
    tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    model = near_model(0.3)
    reqs = [_req(f"speculate {i}", n=24, program_id=f"p{i}") for i in range(3)]
    expected = [_expected(model, tokenizer, r) for r in reqs]
    settings = EngineSettings(kv_memory_gb=0.01, block_size=8, speculate=3, draft_model="self:2")
    llm = build_engine_llm(model, tokenizer, name="tiny", settings=settings, context_window=400)
    caplog.set_level(logging.INFO, logger="harness.llm.engine.client")
    async with llm:
        outs = await asyncio.gather(*(llm.chat(r) for r in reqs))
        assert [o.text for o in outs] == expected
        stats = llm.speculation_stats()
        assert stats is not None and stats.mode == "token" and stats.drafted > 0
        assert stats.draft_tokens + stats.target_tokens == sum(
            o.usage.completion_tokens for o in outs
        )
    assert "token speculation" in caplog.text and "drafts accepted" in caplog.text


async def test_seeded_sampling_under_speculation_ignores_batching(tokenizer: Any) -> None:
    settings = EngineSettings(kv_memory_gb=0.01, block_size=8, speculate=4)
    llm = build_engine_llm(
        near_model(0.3), tokenizer, name="tiny", settings=settings, context_window=400
    )
    s = Sampling(temperature=1.0, top_p=0.9, max_tokens=20, seed=7)
    req = ChatRequest((Message("user", "sample me"),), sampling=s)
    others = [_req(f"busy {i}", n=30) for i in range(3)]
    async with llm:
        alone = await llm.chat(req)
        batched = await asyncio.gather(llm.chat(req), *(llm.chat(o) for o in others))
        assert batched[0].text == alone.text


async def test_step_speculation_through_engine_llm(tokenizer: Any) -> None:
    settings = EngineSettings(
        kv_memory_gb=0.01, block_size=8, conformal_alpha=0.3, step_max_tokens=6
    )
    llm = build_engine_llm(
        near_model(0.3), tokenizer, name="tiny", settings=settings, context_window=400
    )
    assert isinstance(llm.engine.runner, SpeculativeRunner)
    policy = llm.engine.runner.policy
    assert isinstance(policy, StepPolicy)
    assert tokenizer.encode("\n")[0] in policy.config.delimiter_ids
    async with llm:
        outs = await asyncio.gather(*(llm.chat(_req(f"step {i}", n=40)) for i in range(4)))
        stats = llm.speculation_stats()
        assert stats is not None and stats.steps_scored > 0
        assert stats.draft_tokens + stats.target_tokens == sum(
            o.usage.completion_tokens for o in outs
        )


async def test_stream_yields_deltas_step_by_step_that_add_up(tokenizer: Any) -> None:
    from harness.llm.base import StreamingLLM, TextDelta

    model = tiny_model()
    async with EngineLLM(model, tokenizer, config=CFG) as llm:
        assert isinstance(llm, StreamingLLM)
        plain = _req("stream this", n=16)
        whole = await llm.chat(plain)
        events = [e async for e in llm.stream(plain)]
        final = events[-1]
        deltas = [e.text for e in events[:-1] if isinstance(e, TextDelta)]
        assert len(deltas) == len(events) - 1 and len(deltas) >= 2  # not one lump
        assert "".join(deltas) == final.text == whole.text  # type: ignore[union-attr]
        assert (final.finish_reason, final.usage) == (whole.finish_reason, whole.usage)  # type: ignore[union-attr]
        # A stop string: nothing at or past it is ever sent.
        stop = whole.text[5:7]
        events = [e async for e in llm.stream(_req("stream this", n=16, stop=(stop,)))]
        sent = "".join(e.text for e in events[:-1] if isinstance(e, TextDelta))
        assert sent == events[-1].text == whole.text[: whole.text.find(stop)]  # type: ignore[union-attr]
        assert events[-1].finish_reason == "stop"  # type: ignore[union-attr]


async def test_closing_a_stream_early_aborts_its_request(tokenizer: Any) -> None:
    async with EngineLLM(tiny_model(), tokenizer, config=CFG) as llm:
        stream = llm.stream(_req("a long one", n=200))
        first = await stream.__anext__()
        assert first.text  # type: ignore[union-attr]
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(200):
            if not llm.engine.has_unfinished() and not llm._pending:
                break
            await asyncio.sleep(0.01)
        assert not llm.engine.has_unfinished() and not llm._pending and not llm._progress
        # ... and the engine keeps serving.
        assert (await llm.chat(_req("next", n=4))).usage.completion_tokens >= 1


class _CountingTokenizer:
    """The byte tokenizer, recording how many ids each decode call gets."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.decoded: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decode(self, ids: Any, **kw: Any) -> Any:
        self.decoded.append(len(ids))
        return self.inner.decode(ids, **kw)


async def test_streaming_and_stop_strings_decode_only_new_tokens(tokenizer: Any) -> None:
    """A long stream (with a stop string that never matches) decodes a few tokens per step,
    not the whole output each time: its cost is linear in its length."""
    counting = _CountingTokenizer(tokenizer)
    cfg = EngineConfig(block_size=8, num_blocks=128, max_batched_tokens=64, max_model_len=1000)
    async with EngineLLM(tiny_model(), counting, config=cfg) as llm:
        req = _req("stream a long one", n=300, stop=("never-in-a-byte-model-output\x00",))
        counting.decoded.clear()
        events = [e async for e in llm.stream(req)]
        n = events[-1].usage.completion_tokens  # type: ignore[union-attr]
        assert n >= 200
        assert max(counting.decoded) <= 12  # incremental: a window, never the whole output
        assert sum(counting.decoded) <= 20 * n  # two incremental decoders (stream, stops)
