"""Budgets: reserve before, settle after; concurrent calls never overshoot a cap."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import BudgetExceeded, ConfigError, LLMError
from harness.llm.accounting import Price
from harness.llm.base import ChatRequest, Message, Sampling, Usage
from harness.llm.budget import Budget, BudgetedLLM, Reservation
from harness.llm.scripted import ScriptedLLM


def ask(max_tokens: int) -> ChatRequest:
    return ChatRequest(messages=(Message("user", "hi"),), sampling=Sampling(max_tokens=max_tokens))


async def test_totals_count_settled_calls() -> None:
    budget = Budget(max_tokens=10_000)
    llm = BudgetedLLM(ScriptedLLM(["abcdefgh", "abcd"]), budget)
    await llm.chat(ask(10))
    await llm.chat(ask(10))
    totals = budget.totals
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens) == (2, 2, 3)
    assert totals.total_tokens == 5 and totals.usd == 0.0
    assert budget.held == Reservation(0, 0.0)


async def test_a_call_that_cannot_fit_is_refused_before_sending() -> None:
    inner = ScriptedLLM(["never sent"])
    llm = BudgetedLLM(inner, Budget(max_tokens=100))
    with pytest.raises(BudgetExceeded) as info:
        await llm.chat(ask(500))
    message = str(info.value)
    assert "spent 0 of 100 tokens" in message and "needs up to 517 " in message
    assert inner.requests == []


async def test_dollar_cap_uses_the_price_table() -> None:
    prices = {"scripted": Price(input_per_mtok=1_000.0, output_per_mtok=1_000.0)}
    budget = Budget(max_usd=0.1)
    llm = BudgetedLLM(ScriptedLLM(["x" * 40] * 5), budget, prices)
    first = await llm.chat(ask(10))
    assert first.cost_usd == pytest.approx((1 + 10) * 1_000 / 1e6)
    with pytest.raises(BudgetExceeded, match=r"dollar budget exhausted: spent \$0.0110"):
        await llm.chat(ask(100))
    assert budget.totals.usd == pytest.approx(first.cost_usd)


async def test_concurrent_calls_never_overshoot_the_cap() -> None:
    rng = random.Random(7)
    replies = ["y" * rng.randrange(0, 400) for _ in range(60)]
    cap = 2_000
    budget = Budget(max_tokens=cap)
    llm = BudgetedLLM(ScriptedLLM(replies, latency_s=0.001), budget)
    requests = [ask(rng.randrange(10, 100)) for _ in range(60)]
    results = await asyncio.gather(*(llm.chat(r) for r in requests), return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(done) + len(refused) == 60 and done and refused
    biggest = max(llm._estimate(r) + r.sampling.max_tokens for r in requests)
    assert budget.totals.total_tokens <= cap + biggest
    # With usage inside each reservation (as here) the cap itself holds.
    assert budget.totals.total_tokens <= cap
    assert budget.totals.calls == len(done) and budget.held == Reservation(0, 0.0)


async def test_a_call_waits_for_calls_in_flight_then_fits() -> None:
    budget = Budget(max_tokens=100)
    first = await budget.reserve(60)
    waiting = asyncio.create_task(budget.reserve(60))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # 60 held + 60 > 100, but 60 alone fits
    budget.settle(first, Usage(10, 10), 0.0)
    assert await waiting == Reservation(60, 0.0)
    assert budget.held.tokens == 60


async def test_a_waiting_call_is_refused_once_spending_leaves_no_room() -> None:
    budget = Budget(max_tokens=100)
    first = await budget.reserve(60)
    waiting = asyncio.create_task(budget.reserve(60))
    await asyncio.sleep(0)
    budget.settle(first, Usage(30, 30), 0.0)
    with pytest.raises(BudgetExceeded, match="spent 60 of 100"):
        await waiting


async def test_failed_and_cancelled_calls_release_their_reservation() -> None:
    budget = Budget(max_tokens=1_000)
    failing = BudgetedLLM(ScriptedLLM([]), budget)
    with pytest.raises(LLMError):
        await failing.chat(ask(10))
    slow = BudgetedLLM(ScriptedLLM(["a"], latency_s=60), budget)
    task = asyncio.create_task(slow.chat(ask(10)))
    await asyncio.sleep(0.01)
    assert budget.held.tokens > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.held == Reservation(0, 0.0) and budget.totals.calls == 0


def test_caps_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Budget(max_tokens=0)
    with pytest.raises(ConfigError):
        Budget(max_usd=-1.0)


@given(
    cap=st.integers(10, 500),
    calls=st.lists(st.tuples(st.integers(1, 100), st.floats(0, 1)), min_size=1, max_size=30),
)
async def test_spending_within_reservations_never_passes_the_cap(
    cap: int, calls: list[tuple[int, float]]
) -> None:
    budget = Budget(max_tokens=cap)

    async def one(need: int, used: float) -> None:
        reservation = await budget.reserve(need)
        await asyncio.sleep(0)
        actual = int(need * used)
        budget.settle(reservation, Usage(actual // 2, actual - actual // 2), 0.0)

    await asyncio.gather(*(one(n, u) for n, u in calls), return_exceptions=True)
    assert budget.totals.total_tokens <= cap
    assert budget.held.tokens == 0
