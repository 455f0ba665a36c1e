"""The `harness solve` pipeline as a `Solver`: the model, budgets, the sandbox backend and
the orchestrator, built from a config. The CLI, `harness eval` and `harness bot` all use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.agent.trajectory import Observer
from harness.config import SolveConfig, price_table
from harness.llm.accounting import PriceTable, price_for
from harness.llm.base import LLM
from harness.llm.budget import Budget, BudgetedLLM, SpendLedger
from harness.llm.model_store import ModelStore
from harness.orchestrator import Orchestrator
from harness.runstore import RunStore
from harness.types import Candidate, SolveResult, Task

ObserverFactory = Callable[[Callable[[], tuple[int, float]]], Observer]


class PipelineSolver:
    """Solves tasks with the configured pipeline. The model is loaded once and reused across
    tasks; every task gets its own budget."""

    def __init__(
        self,
        config: SolveConfig,
        *,
        cache_dir: Path,
        store: ModelStore,
        api_key: str | None = None,
        extra_candidates: Sequence[Candidate] = (),
        llm: LLM | None = None,
    ) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.store = store
        self.api_key = api_key
        self.extra_candidates = list(extra_candidates)
        self.prices = price_table(config)  # shipped prices, the config's own on top
        self._llm = llm
        self._owns_llm = llm is None
        self._context_llm: LLM | None = None
        self._lock = asyncio.Lock()

    async def _make(self, spec: str) -> LLM:
        from harness.llm.specs import make_llm

        return await make_llm(
            spec,
            store=self.store,
            fetch_missing=True,
            api_key=self.api_key,
            base_url=self.config.base_url,
            prices=self.prices,
            max_concurrency=self.config.concurrency.llm_calls,
            engine=self.config.engine,
        )

    async def model(self) -> LLM:
        async with self._lock:
            if self._llm is None:
                self._llm = await self._make(self.config.model)
            return self._llm

    async def context_model(self) -> LLM | None:
        """The cheaper relevance model, when `context.relevance_model` names one."""
        spec = self.config.context.relevance_model
        if spec is None or spec == self.config.model:
            return None
        async with self._lock:
            if self._context_llm is None:
                self._context_llm = await self._make(spec)
            return self._context_llm

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        return await self.solve_observed(task, run_dir, None)

    async def solve_observed(
        self, task: Task, run_dir: Path, observer: ObserverFactory | None
    ) -> SolveResult:
        from harness.sandboxes import make_backend

        # The ledger in the run directory carries the spend over a crash and --resume.
        budget = Budget(
            max_tokens=self.config.budget.max_tokens,
            max_usd=self.config.budget.max_usd,
            ledger=SpendLedger(RunStore(run_dir).spend_log),
        )
        # `concurrency.llm_calls` bounds this run's calls in flight before they reserve.
        slots = asyncio.Semaphore(self.config.concurrency.llm_calls)
        llm = BudgetedLLM(await self.model(), budget, self.prices, slots=slots)
        cheap = await self.context_model()
        context_llm = (
            BudgetedLLM(cheap, budget, self.prices, slots=slots) if cheap is not None else None
        )

        def usage() -> tuple[int, float]:
            totals = budget.totals
            return totals.total_tokens, totals.usd

        sandbox = self.config.sandbox
        backend = make_backend(sandbox.backend, self.cache_dir, docker_image=sandbox.image)
        async with backend:
            orchestrator = Orchestrator(
                self.config,
                llm,
                backend,
                observer=observer(usage) if observer else None,
                extra_candidates=self.extra_candidates,
                context_llm=context_llm,
                usage=usage,
                unpriced=unpriced_models(self.config, self.prices),
            )
            return await orchestrator.solve(task, run_dir)

    async def aclose(self) -> None:
        if self._llm is not None and self._owns_llm:
            await self._llm.aclose()
        if self._context_llm is not None:
            await self._context_llm.aclose()
        self._llm = self._context_llm = None


def unpriced_models(config: SolveConfig, prices: PriceTable) -> tuple[str, ...]:
    """The API models of `config` (main and relevance) without a price: their calls cost an
    unknown amount. In-process and scripted models cost nothing per token."""
    from harness.llm.specs import parse_spec

    names = []
    for text in (config.model, config.context.relevance_model):
        spec = parse_spec(text) if text else None
        if spec is not None and spec.kind == "openai" and price_for(prices, spec.target) is None:
            names.append(spec.target)
    return tuple(dict.fromkeys(names))


def make_pipeline_solver(
    config: SolveConfig, cache_dir: Path, models_dir: Path, api_key: str | None = None
) -> PipelineSolver:
    """A module-level factory (picklable through functools.partial, as Ray needs)."""
    return PipelineSolver(
        config, cache_dir=cache_dir, store=ModelStore(models_dir), api_key=api_key
    )
