"""Budgets: reserve before, settle after; concurrent calls never overshoot a cap; reported
usage is checked; a ledger carries the spend over a restart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import BudgetExceeded, ConfigError, LLMError
from harness.llm.accounting import Price, estimate_prompt_tokens, max_prompt_tokens
from harness.llm.base import ChatRequest, ChatResponse, Message, Sampling, Usage
from harness.llm.budget import Budget, BudgetedLLM, Reservation, SpendLedger
from harness.llm.openai_http import OpenAIHTTP
from harness.llm.scripted import ScriptedLLM
from tests.fixtures.fake_openai import fake_openai
from tests.fixtures.http_script import completion, scripted_server


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


# Reported usage is checked ------------------------------------------------------------------
async def test_negative_usage_from_a_server_fails_the_call_and_charges_its_reservation() -> None:
    budget = Budget(max_tokens=10_000)
    async with scripted_server([completion("ok", usage=(-500, 3))]) as (url, _):
        llm = BudgetedLLM(OpenAIHTTP("m", base_url=url), budget)
        with pytest.raises(LLMError, match="negative token usage"):
            await llm.chat(ask(100))
        await llm.aclose()
    # The server answered, so it may have billed: the call counts at its worst case.
    assert budget.totals.calls == 1
    assert budget.totals.total_tokens == estimate_prompt_tokens(ask(100)) + 100
    assert budget.held == Reservation(0, 0.0)


async def test_usage_beyond_what_the_request_allows_is_clamped_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = Budget(max_tokens=10_000)
    prices = {"m": Price(1.0, 2.0)}
    async with scripted_server([completion("ok", usage=(10**9, 10**9))]) as (url, _):
        llm = BudgetedLLM(OpenAIHTTP("m", base_url=url, prices=prices), budget, prices)
        with caplog.at_level(logging.WARNING, logger="harness.llm.budget"):
            response = await llm.chat(ask(100))
        await llm.aclose()
    bound = max_prompt_tokens(ask(100))
    assert response.usage == Usage(bound, 100)
    assert budget.totals.total_tokens == bound + 100
    assert response.cost_usd == pytest.approx((bound * 1.0 + 100 * 2.0) / 1e6)
    assert "beyond what the request allows" in caplog.text and "1000000000" in caplog.text


class Reporting:
    """An LLM whose reported usage is whatever the test says (any backend might report it)."""

    model_name = "reporting"

    def __init__(self, reports: list[tuple[int, int, float]]) -> None:
        self.reports = list(reports)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        prompt, completion_tokens, usd = self.reports.pop(0)
        return ChatResponse("x", "stop", Usage(prompt, completion_tokens), 0.0, cost_usd=usd)

    def speculation_stats(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


@given(
    st.lists(
        st.tuples(
            st.integers(-(10**6), 10**6),
            st.integers(-(10**6), 10**6),
            st.sampled_from([-1.0, 0.0, 0.5, float("nan"), float("inf"), -float("inf")]),
        ),
        min_size=1,
        max_size=20,
    )
)
async def test_spend_never_decreases_whatever_a_backend_reports(
    reports: list[tuple[int, int, float]],
) -> None:
    budget = Budget()
    llm = BudgetedLLM(Reporting(reports), budget)
    seen = [budget.totals]
    for _ in reports:
        with contextlib.suppress(LLMError):
            await llm.chat(ask(50))
        seen.append(budget.totals)
    for before, after in itertools.pairwise(seen):
        assert after.total_tokens >= before.total_tokens and after.usd >= before.usd
        assert math.isfinite(after.usd)
    assert budget.totals.total_tokens <= len(reports) * (max_prompt_tokens(ask(50)) + 50)


# Concurrency against a real server ------------------------------------------------------------
def chatty(request: ChatRequest) -> str:
    """Replies of realistic length, a different one per turn."""
    turn = sum(1 for m in request.messages if m.role == "assistant")
    return f"turn {turn}: " + "let me look at the failing test and fix the parser. " * 12


async def trajectory(llm: BudgetedLLM, index: int, turns: int = 30) -> int:
    """A multi-turn conversation, as a sample's agent loop holds; stops at the budget."""
    messages = [
        Message("system", "You fix bugs."),
        Message("user", f"issue #{index}: " + "x" * 400),
    ]
    done = 0
    try:
        for _ in range(turns):
            request = ChatRequest(tuple(messages), Sampling(max_tokens=256), program_id=f"t{index}")
            reply = await llm.chat(request)
            messages += [Message("assistant", reply.text), Message("user", "output: ok " * 20)]
            done += 1
    except BudgetExceeded:
        pass
    return done


@pytest.mark.parametrize("overreport", [1.0, 3.0], ids=["honest", "overreporting"])
async def test_the_cap_holds_within_the_calls_in_flight_with_concurrent_trajectories(
    overreport: float,
) -> None:
    cap, width = 40_000, 6
    async with fake_openai(chatty, latency_s=0.02, overreport=overreport) as (url, server):
        budget = Budget(max_tokens=cap)
        llm = BudgetedLLM(OpenAIHTTP("fake", base_url=url, max_concurrency=width), budget)
        turns = await asyncio.gather(*(trajectory(llm, i) for i in range(width)))
        await llm.aclose()
    assert server.max_in_flight >= 4, "the trajectories never overlapped"
    assert all(t > 0 for t in turns) and sum(turns) == server.calls
    spent = budget.totals.total_tokens
    if overreport == 1.0:
        # Realistic usage stays inside each reservation, so the cap itself holds, and what
        # the budget counts is what the server billed.
        assert spent == server.billed <= cap
    else:
        # A server over-reporting 3x bills more than each reservation; clamped to what each
        # request allows, the overshoot is bounded by the calls that were in flight.
        assert spent <= cap + width * server.biggest_call
        assert spent < server.billed  # the clamp took effect
    assert budget.held == Reservation(0, 0.0)


# The ledger: spend survives the process ---------------------------------------------------------
async def test_a_new_budget_continues_the_spend_a_ledger_recorded(tmp_path: Path) -> None:
    ledger = SpendLedger(tmp_path / "spend.jsonl")
    first = Budget(max_tokens=1_000, ledger=ledger)
    done = await first.reserve(100, 0.5)
    first.settle(done, Usage(30, 20), 0.25)
    failed = await first.reserve(100)
    first.release(failed)  # failed before it used anything we know of
    await first.reserve(200, 1.0)  # in flight when the process was killed
    with open(ledger.path, "a") as fh:
        fh.write('{"kind": "settle", "call": "torn')  # a write cut off by the kill

    again = Budget(max_tokens=1_000, ledger=ledger)
    totals = again.totals
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens) == (2, 30, 20)
    assert (totals.cut_off_calls, totals.cut_off_tokens) == (1, 200)
    assert totals.total_tokens == 250 and totals.usd == pytest.approx(1.25)
    with pytest.raises(BudgetExceeded, match=r"spent 250 of 1000 tokens \(1 call\(s\) an"):
        await again.reserve(800)
    assert await again.reserve(750)


async def test_calls_queued_for_a_slot_hold_no_reservation(tmp_path: Path) -> None:
    """Six trajectories share one call slot: only the call being sent is reserved in the
    ledger, so a kill at that moment charges one call at its reservation, not six."""
    ledger = SpendLedger(tmp_path / "spend.jsonl")
    budget = Budget(max_tokens=100_000, ledger=ledger)
    gate = asyncio.Event()

    async def wait_for_gate(seconds: float) -> None:
        await gate.wait()

    inner = ScriptedLLM(["ok"] * 6, latency_s=1.0, sleep=wait_for_gate)
    llm = BudgetedLLM(inner, budget, slots=asyncio.Semaphore(1))
    calls = [asyncio.create_task(llm.chat(ask(50))) for _ in range(6)]
    for _ in range(20):
        await asyncio.sleep(0)
    # The process dies here: a new budget reads what the ledger says was in flight.
    assert Budget(ledger=ledger).totals.cut_off_calls == 1
    assert budget.held.tokens == estimate_prompt_tokens(ask(50)) + 50
    gate.set()
    await asyncio.gather(*calls)
    assert budget.totals.calls == 6 and Budget(ledger=ledger).totals.cut_off_calls == 0
