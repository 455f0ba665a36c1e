"""One contract, every backend: in-process (tiny real model) with plain `generate` and on the
engine, OpenAI HTTP -> `harness serve` (same tiny model over loopback), and the scripted
model."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

import pytest

from harness.errors import ContextTooLong
from harness.llm.base import LLM, ChatRequest, Message, Sampling
from harness.llm.local import LocalLLM
from harness.llm.openai_http import OpenAIHTTP, RetryPolicy
from harness.llm.scripted import ScriptedLLM
from harness.llm.server import serving
from tests.fixtures.tiny_model import CONTEXT_WINDOW, stop_string_from

_WORDS = [
    "fix",
    "the",
    "test",
    "patch",
    "diff",
    "import",
    "return",
    "value",
    "error",
    "list",
    "none",
    "sandbox",
    "run",
]


def deterministic_text(request: ChatRequest) -> str:
    """The scripted model's answer: pseudo-random words seeded by the prompt."""
    digest = hashlib.sha256(request.messages[-1].content.encode()).digest()
    rng = random.Random(digest)
    return " ".join(rng.choice(_WORDS) for _ in range(80))


@pytest.fixture(params=["local", "engine", "openai_http->serve", "scripted"])
async def llm(
    request: pytest.FixtureRequest, tiny_llm: LocalLLM, tiny_engine: LLM
) -> AsyncIterator[LLM]:
    if request.param == "local":
        yield tiny_llm
    elif request.param == "engine":
        yield tiny_engine
    elif request.param == "openai_http->serve":
        async with serving(tiny_llm) as base_url:
            client = OpenAIHTTP("tiny", base_url=base_url, retry=RetryPolicy(max_retries=0))
            yield client
            await client.aclose()
    else:
        yield ScriptedLLM(deterministic_text, context_window=CONTEXT_WINDOW)


def ask(text: str, *, stop: tuple[str, ...] = (), **sampling: float | int | None) -> ChatRequest:
    return ChatRequest(
        messages=(Message("system", "You fix bugs."), Message("user", text)),
        sampling=Sampling(**sampling),  # type: ignore[arg-type]
        stop=stop,
    )


async def test_answer_carries_text_usage_and_metadata(llm: LLM) -> None:
    response = await llm.chat(ask("Fix the failing test", max_tokens=12))
    assert isinstance(response.text, str) and response.text
    assert response.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 12
    assert response.latency_s >= 0
    assert response.model
    assert response.cost_usd == 0.0  # local and unpriced models cost nothing
    assert llm.model_name


async def test_max_tokens_bounds_completion_and_reports_length(llm: LLM) -> None:
    response = await llm.chat(ask("Fix the failing test", max_tokens=5))
    assert response.usage.completion_tokens == 5
    assert response.finish_reason == "length"


async def test_greedy_is_deterministic_under_concurrency(llm: LLM) -> None:
    request = ask("def add(a, b):", max_tokens=16)
    first = await llm.chat(request)
    again = await asyncio.gather(*(llm.chat(request) for _ in range(3)))
    assert [r.text for r in again] == [first.text] * 3


async def test_concurrent_calls_each_get_their_own_answer(llm: LLM) -> None:
    prompts = ["import os", "class Sandbox:", "Hello, world!", "for i in range(10):"]
    alone = [await llm.chat(ask(p, max_tokens=10)) for p in prompts]
    together = await asyncio.gather(*(llm.chat(ask(p, max_tokens=10)) for p in prompts))
    assert [r.text for r in together] == [r.text for r in alone]


async def test_stop_string_trims_at_its_first_occurrence(llm: LLM) -> None:
    full = (await llm.chat(ask("Fix the failing test", max_tokens=40))).text
    stop = stop_string_from(full)
    response = await llm.chat(ask("Fix the failing test", max_tokens=40, stop=(stop,)))
    assert response.text == full[: full.index(stop)]
    assert stop not in response.text
    assert response.finish_reason == "stop"


async def test_seeded_sampling_repeats(llm: LLM) -> None:
    request = ask("Hello, world!", max_tokens=16, temperature=1.0, seed=1234)
    first, second = await llm.chat(request), await llm.chat(request)
    assert first.text == second.text


async def test_prompt_over_the_window_is_context_too_long(llm: LLM) -> None:
    with pytest.raises(ContextTooLong) as info:
        await llm.chat(ask("the quick brown fox " * 300, max_tokens=8))
    message = str(info.value)
    assert f"context window is {CONTEXT_WINDOW} tokens" in message
    assert "prompt is" in message


async def test_scheduling_hints_are_accepted(llm: LLM) -> None:
    request = ChatRequest(
        messages=(Message("user", "Fix the failing test"),),
        sampling=Sampling(max_tokens=4),
        program_id="trajectory-3",
        last_turn=True,
        next_tool="run_test",
    )
    assert (await llm.chat(request)).usage.completion_tokens <= 4
