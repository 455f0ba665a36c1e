"""PipelineSolver: an API model without a known price makes the run's cost unknown (said so
in the summary, the report and the result), never a reassuring $0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from examples.scripted.durations_oracle import respond
from harness.config import load_config, price_table
from harness.llm.model_store import ModelStore
from harness.solver import PipelineSolver, unpriced_models
from tests.fixtures.fake_openai import fake_openai
from tests.test_orchestrator import example_task


def test_only_api_models_without_a_price_are_unpriced() -> None:
    def unpriced(*overrides: str) -> tuple[str, ...]:
        config = load_config(None, list(overrides))
        return unpriced_models(config, price_table(config))

    assert unpriced("model=openai:house-model") == ("house-model",)
    assert unpriced("model=openai:gpt-4o") == ()  # the shipped table knows it
    assert unpriced("model=openai:house-model", "prices.house-model=[1, 2]") == ()
    assert unpriced("model=smollm2-135m") == ()  # in-process: costs nothing per token
    assert unpriced("model=openai:gpt-4o", "context.relevance_model=openai:cheap-house-model") == (
        "cheap-house-model",
    )


async def test_a_run_on_an_unpriced_api_model_reports_its_cost_as_unknown(
    docker_backend: Any, cache_dir: Path, tmp_path: Path
) -> None:
    """(The solver opens its own docker backend; the fixture marks the test and skips it
    without Docker.)"""
    task = await example_task(cache_dir)
    async with fake_openai(respond) as (url, server):
        config = load_config(
            None, [f"model=openai:oracle?base_url={url}", "samples=1", "context.enabled=false"]
        )
        solver = PipelineSolver(config, cache_dir=cache_dir, store=ModelStore(tmp_path / "m"))
        try:
            result = await solver.solve(task, tmp_path / "run")
        finally:
            await solver.aclose()
    assert server.billed > 0 and result.tokens == server.billed
    assert result.unpriced == ("oracle",) and result.cost_usd == 0.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["unpriced"] == ["oracle"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- cost: unknown (no price for oracle)" in report and "$0.0000" not in report
