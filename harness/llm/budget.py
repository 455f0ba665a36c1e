"""A shared token / dollar budget that every call reserves against before it is sent.

A reservation covers the worst case (a high prompt estimate + max_tokens) and settling swaps it
for the real usage, so concurrent calls cannot together overshoot a cap. A call that cannot fit
even after the others settle raises BudgetExceeded; one that fits later waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from harness.errors import BudgetExceeded, ConfigError
from harness.llm.accounting import PriceTable, cost_usd, estimate_prompt_tokens
from harness.llm.base import LLM, ChatRequest, ChatResponse, Usage

_USD_SLACK = 1e-12  # float sums of prices


@dataclass(frozen=True)
class BudgetTotals:
    """What settled calls used, for reports."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Reservation:
    tokens: int
    usd: float


class Budget:
    """Caps on total tokens and/or dollars across every call that shares this object.

    Async-safe within one event loop: checks and bookkeeping never await in between.
    """

    def __init__(self, *, max_tokens: int | None = None, max_usd: float | None = None) -> None:
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigError(f"token budget must be positive, got {max_tokens}")
        if max_usd is not None and max_usd <= 0:
            raise ConfigError(f"dollar budget must be positive, got {max_usd}")
        self.max_tokens = max_tokens
        self.max_usd = max_usd
        self._totals = BudgetTotals()
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
                return Reservation(tokens, usd)
            changed = self._changed
            await changed.wait()

    def settle(self, reservation: Reservation, usage: Usage, usd: float) -> None:
        """Replace a reservation with what the call really used."""
        t = self._totals
        self._totals = BudgetTotals(
            calls=t.calls + 1,
            prompt_tokens=t.prompt_tokens + usage.prompt_tokens,
            completion_tokens=t.completion_tokens + usage.completion_tokens,
            usd=t.usd + usd,
        )
        self.release(reservation)

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed before using anything we know of."""
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
        if self.max_tokens is not None and t.total_tokens + tokens > self.max_tokens:
            raise BudgetExceeded(
                f"token budget exhausted: spent {t.total_tokens} of {self.max_tokens} tokens; "
                f"the next call needs up to {tokens} (prompt estimate + max_tokens)",
                hint="raise the token cap or lower max_tokens",
            )
        if self.max_usd is not None and t.usd + usd > self.max_usd + _USD_SLACK:
            raise BudgetExceeded(
                f"dollar budget exhausted: spent ${t.usd:.4f} of ${self.max_usd:.4f}; "
                f"the next call needs up to ${usd:.4f}",
                hint="raise the dollar cap or lower max_tokens",
            )


class BudgetedLLM:
    """An `LLM` that reserves against `budget` before each call and settles after it."""

    def __init__(
        self,
        inner: LLM,
        budget: Budget,
        prices: PriceTable | None = None,
        *,
        estimate: Callable[[ChatRequest], int] = estimate_prompt_tokens,
    ) -> None:
        self.inner = inner
        self.budget = budget
        self._prices = prices or {}
        self._estimate = estimate

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    async def chat(self, request: ChatRequest) -> ChatResponse:
        worst = Usage(self._estimate(request), request.sampling.max_tokens)
        reservation = await self.budget.reserve(
            worst.total_tokens, cost_usd(self._prices, self.model_name, worst)
        )
        try:
            response = await self.inner.chat(request)
        except BaseException:
            self.budget.release(reservation)
            raise
        cost = response.cost_usd or cost_usd(self._prices, self.model_name, response.usage)
        self.budget.settle(reservation, response.usage, cost)
        return replace(response, cost_usd=cost)

    async def aclose(self) -> None:
        await self.inner.aclose()
