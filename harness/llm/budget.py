"""A shared token / dollar budget that every call reserves against before it is sent.

A reservation covers the worst case (a high prompt estimate + max_tokens) and settling swaps it
for the real usage, so concurrent calls cannot together overshoot a cap. A call that cannot fit
even after the others settle raises BudgetExceeded; one that fits later waits for them. With a
`SpendLedger` the spend survives the process: a resumed run continues it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BudgetExceeded, ConfigError, LLMError
from harness.llm.accounting import (
    PriceTable,
    checked_usage,
    estimate_prompt_tokens,
    price_for,
)
from harness.llm.base import LLM, ChatRequest, ChatResponse, Usage
from harness.store import append_jsonl, read_jsonl

if TYPE_CHECKING:
    from harness.llm.engine.spec_policy import SpecStats

_USD_SLACK = 1e-12  # float sums of prices
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetTotals:
    """What settled calls used, for reports."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    cut_off_calls: int = 0  # calls a crash cut off: charged at their reservation
    cut_off_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens + self.cut_off_tokens

    def plus(self, usage: Usage, usd: float) -> BudgetTotals:
        return replace(
            self,
            calls=self.calls + 1,
            prompt_tokens=self.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self.completion_tokens + usage.completion_tokens,
            usd=self.usd + usd,
        )


@dataclass(frozen=True)
class Reservation:
    tokens: int
    usd: float
    call: str = field(default="", compare=False)  # names the call in a ledger


class SpendLedger:
    """A run's spend on disk: every reservation and settlement, appended and fsync'd.

    `totals()` is what earlier processes spent. A call reserved but never settled or released
    was cut off by a crash; the server may have billed it, so it counts at its reservation.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def totals(self) -> BudgetTotals:
        totals = BudgetTotals()
        open_calls: dict[str, dict[str, float]] = {}
        for record in read_jsonl(self.path):
            call, kind = str(record.get("call", "")), record.get("kind")
            if kind == "reserve":
                open_calls[call] = record
            elif kind == "settle" and open_calls.pop(call, None) is not None:
                usage = Usage(int(record["prompt_tokens"]), int(record["completion_tokens"]))
                totals = totals.plus(usage, float(record["usd"]))
            elif kind == "release":
                open_calls.pop(call, None)
        for record in open_calls.values():
            totals = replace(
                totals,
                calls=totals.calls + 1,
                usd=totals.usd + float(record["usd"]),
                cut_off_calls=totals.cut_off_calls + 1,
                cut_off_tokens=totals.cut_off_tokens + int(record["tokens"]),
            )
        return totals

    def reserved(self, reservation: Reservation) -> None:
        append_jsonl(
            self.path,
            {
                "kind": "reserve",
                "call": reservation.call,
                "tokens": reservation.tokens,
                "usd": reservation.usd,
            },
        )

    def settled(self, reservation: Reservation, usage: Usage, usd: float) -> None:
        append_jsonl(
            self.path,
            {
                "kind": "settle",
                "call": reservation.call,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "usd": usd,
            },
        )

    def released(self, reservation: Reservation) -> None:
        append_jsonl(self.path, {"kind": "release", "call": reservation.call})


class Budget:
    """Caps on total tokens and/or dollars across every call that shares this object.

    Async-safe within one event loop: checks and bookkeeping never await in between.
    """

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_usd: float | None = None,
        ledger: SpendLedger | None = None,
    ) -> None:
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigError(f"token budget must be positive, got {max_tokens}")
        if max_usd is not None and not max_usd > 0:
            raise ConfigError(f"dollar budget must be positive, got {max_usd}")
        self.max_tokens = max_tokens
        self.max_usd = max_usd
        self._ledger = ledger
        self._totals = ledger.totals() if ledger is not None else BudgetTotals()
        self._held_tokens = 0
        self._held_usd = 0.0
        self._changed = asyncio.Event()

    @property
    def totals(self) -> BudgetTotals:
        return self._totals

    @property
    def held(self) -> Reservation:
        """What calls in flight have reserved and not yet settled."""
        return Reservation(self._held_tokens, self._held_usd)

    async def reserve(self, tokens: int, usd: float = 0.0) -> Reservation:
        """Hold `tokens` and `usd` for one call; wait while calls in flight hold too much."""
        while True:
            self._check_can_ever_fit(tokens, usd)
            if self._fits(self._held_tokens + tokens, self._held_usd + usd):
                self._held_tokens += tokens
                self._held_usd += usd
                reservation = Reservation(tokens, usd, uuid.uuid4().hex[:16])
                if self._ledger is not None:
                    self._ledger.reserved(reservation)
                return reservation
            changed = self._changed
            await changed.wait()

    def settle(self, reservation: Reservation, usage: Usage, usd: float) -> None:
        """Replace a reservation with what the call really used. Spend never decreases:
        negative counts (checked before, see `checked_usage`) count as zero here."""
        usage = Usage(max(usage.prompt_tokens, 0), max(usage.completion_tokens, 0))
        usd = usd if math.isfinite(usd) and usd > 0 else 0.0
        self._totals = self._totals.plus(usage, usd)
        if self._ledger is not None:
            self._ledger.settled(reservation, usage, usd)
        self._unhold(reservation)

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed before using anything we know of."""
        if self._ledger is not None:
            self._ledger.released(reservation)
        self._unhold(reservation)

    def _unhold(self, reservation: Reservation) -> None:
        self._held_tokens -= reservation.tokens
        self._held_usd -= reservation.usd
        self._changed.set()
        self._changed = asyncio.Event()  # waiters hold the old one, already set

    def _fits(self, extra_tokens: int, extra_usd: float) -> bool:
        t = self._totals
        if self.max_tokens is not None and t.total_tokens + extra_tokens > self.max_tokens:
            return False
        return self.max_usd is None or t.usd + extra_usd <= self.max_usd + _USD_SLACK

    def _check_can_ever_fit(self, tokens: int, usd: float) -> None:
        t = self._totals
        cut = (
            f" ({t.cut_off_calls} call(s) an interruption cut off count at their reservation)"
            if t.cut_off_calls
            else ""
        )
        if self.max_tokens is not None and t.total_tokens + tokens > self.max_tokens:
            raise BudgetExceeded(
                f"token budget exhausted: spent {t.total_tokens} of {self.max_tokens} tokens"
                f"{cut}; the next call needs up to {tokens} (prompt estimate + max_tokens)",
                hint="raise the token cap or lower max_tokens",
            )
        if self.max_usd is not None and t.usd + usd > self.max_usd + _USD_SLACK:
            raise BudgetExceeded(
                f"dollar budget exhausted: spent ${t.usd:.4f} of ${self.max_usd:.4f}{cut}; "
                f"the next call needs up to ${usd:.4f}",
                hint="raise the dollar cap or lower max_tokens",
            )


class BudgetedLLM:
    """An `LLM` that reserves against `budget` before each call and settles after it.

    The usage a backend reports is checked (`checked_usage`): a call reporting negative counts
    is charged its whole reservation and fails; counts beyond the request's limits are clamped
    and logged as a warning. The cost comes from `prices` when they know the model.

    With `slots`, a call takes a slot before it reserves: only calls about to be sent hold a
    reservation, so a crash strands (charges at their reservation) the calls in flight, not
    every call queued behind them.
    """

    def __init__(
        self,
        inner: LLM,
        budget: Budget,
        prices: PriceTable | None = None,
        *,
        estimate: Callable[[ChatRequest], int] = estimate_prompt_tokens,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.inner = inner
        self.budget = budget
        self._prices = prices or {}
        self._estimate = estimate
        self._slots = slots

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def speculation_stats(self) -> SpecStats | None:
        return self.inner.speculation_stats()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if self._slots is None:
            return await self._chat(request)
        async with self._slots:
            return await self._chat(request)

    async def _chat(self, request: ChatRequest) -> ChatResponse:
        worst = Usage(self._estimate(request), request.sampling.max_tokens)
        reservation = await self.budget.reserve(worst.total_tokens, self._cost(worst, 0.0))
        try:
            response = await self.inner.chat(request)
        except BaseException:
            self.budget.release(reservation)
            raise
        try:
            usage, warning = checked_usage(request, response.usage, self.model_name)
        except LLMError:
            self.budget.settle(reservation, worst, reservation.usd)  # what it may have cost
            raise
        if warning is not None:
            log.warning("%s", warning)
        cost = self._cost(usage, response.cost_usd)
        self.budget.settle(reservation, usage, cost)
        return replace(response, usage=usage, cost_usd=cost)

    def _cost(self, usage: Usage, reported: float) -> float:
        price = price_for(self._prices, self.model_name)
        if price is not None:
            return price.cost(usage.prompt_tokens, usage.completion_tokens)
        return reported if math.isfinite(reported) and reported > 0 else 0.0

    async def aclose(self) -> None:
        await self.inner.aclose()
