"""`harness solve` end to end on the bundled example: real docker sandboxes, a scripted model
that fixes the bug (examples/scripted/durations_oracle.py), voting, selection, reports,
budgets, and trajectories that fail without stopping the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from examples.scripted.durations_oracle import respond
from harness.config import load_config
from harness.llm.base import ChatRequest
from harness.llm.budget import Budget, BudgetedLLM
from harness.llm.scripted import ScriptedLLM
from harness.orchestrator import Orchestrator
from harness.sandboxes import SandboxSpec
from harness.tasks import make_task
from harness.types import Task

ROOT = Path(__file__).resolve().parent.parent
ISSUE = str(ROOT / "examples" / "durations.issue.md")
EXAMPLE = str(ROOT / "examples" / "durations")
HIDDEN = ROOT / "examples" / "hidden-tests" / "durations" / "test_fractional_units.py"


async def example_task(cache_dir: Path) -> Task:
    task, _ = await make_task(ISSUE, EXAMPLE, None, cache_dir)
    return task


async def hidden_test(backend: Any, task: Task, patch: str | None) -> tuple[int, str]:
    """Exit status and output of the project's own hidden test, with or without `patch`."""
    async with await backend.open(
        SandboxSpec(repo=Path(task.repo), commit=task.base_commit)
    ) as box:
        if patch is not None:
            assert (await box.apply_patch(patch)).applied
        await box.write_file(f"{box.scratch}/test_hidden.py", HIDDEN.read_text())
        res = await box.exec(
            f"PYTHONPATH={box.workdir} python3 -m pytest -q -p no:cacheprovider "
            f"{box.scratch}/test_hidden.py",
            timeout=120,
        )
        return res.exit_code, res.output


async def test_solves_the_bundled_example(
    docker_backend: Any, cache_dir: Path, tmp_path: Path
) -> None:
    task = await example_task(cache_dir)
    llm = ScriptedLLM(respond)
    config = load_config(None, ["samples=4"])
    result = await Orchestrator(config, llm, docker_backend).solve(task, tmp_path / "run")

    assert result.status == "patched" and result.test_verified
    assert "float(match.group(1))" in result.patch and "int(float" not in result.patch
    # The winning patch makes the project's own hidden test pass; the original fails it.
    code, output = await hidden_test(docker_backend, task, None)
    assert code == 1 and "4 failed, 5 passed" in output
    code, output = await hidden_test(docker_backend, task, result.patch)
    assert code == 0 and "9 passed" in output

    run = tmp_path / "run"
    for name in (
        "task.json",
        "config.yaml",
        "context.json",
        "votes.json",
        "patch.diff",
        "report.md",
        "summary.json",
        "selection.jsonl",
    ):
        assert (run / name).exists(), name
    assert len(list((run / "trajectories").glob("sample-*.jsonl"))) == 4
    votes = json.loads((run / "votes.json").read_text())
    # sample-03 hard-codes the issue's examples: it passes every reproduction script, so
    # voting alone ties it with the real fix; the selection loop's extra test tells them apart.
    assert votes["candidates"]["sample-03"]["votes"] == 4
    assert votes["candidates"]["sample-01"]["votes"] == 0
    # Every sample maps to the row its patch is graded under (identical patches share one).
    assert len(result.samples) == 4
    assert set(result.samples) <= {c.candidate.candidate_id for c in result.candidates}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected_by"] == "model" and summary["winner"] in ("sample-00", "sample-02")
    report = (run / "report.md").read_text()
    for heading in ("## What was tried", "## Votes", "## The winner and why", "## Cost"):
        assert heading in report
    assert (run / "patch.diff").read_text() == result.patch


async def test_budget_cap_holds_and_the_run_ends_cleanly(
    docker_backend: Any, cache_dir: Path, tmp_path: Path
) -> None:
    task = await example_task(cache_dir)
    budget = Budget(max_tokens=9000)
    llm = BudgetedLLM(ScriptedLLM(respond), budget)
    config = load_config(None, ["samples=4"])
    result = await Orchestrator(config, llm, docker_backend).solve(task, tmp_path / "run")
    spent = budget.totals.total_tokens
    assert spent <= 9000 + config.editing.max_tokens  # at most one call's reservation over
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any(s["status"] == "budget" for s in summary["samples"])
    assert result.status in ("patched", "no_patch")
    assert (tmp_path / "run" / "report.md").exists()


@pytest.mark.parametrize("wrap", [True, False], ids=["harness-error", "bare-runtime-error"])
async def test_a_failing_trajectory_does_not_stop_the_others(
    docker_backend: Any, cache_dir: Path, tmp_path: Path, wrap: bool
) -> None:
    """Any exception in one sample, the project's own or a bug's, ends that sample with
    status `error`, its traceback in its log; the others go on."""
    task = await example_task(cache_dir)
    from harness.errors import LLMError

    def flaky(request: ChatRequest) -> str:
        if (request.program_id or "").endswith("sample-01"):
            if wrap:
                raise LLMError("backend exploded")
            raise RuntimeError("backend exploded")  # not a HarnessError: a real bug
        return respond(request)

    result = await Orchestrator(
        load_config(None, ["samples=3"]), ScriptedLLM(flaky), docker_backend
    ).solve(task, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    statuses = {s["sample_id"]: s["status"] for s in summary["samples"]}
    assert statuses == {"sample-00": "finished", "sample-01": "error", "sample-02": "finished"}
    assert result.status == "patched"
    # Per sample, in sampling order, the candidate its patch is graded under; none for 01.
    rows = {c.candidate.candidate_id for c in result.candidates}
    assert len(result.samples) == 3 and result.samples[1] == ""
    assert {result.samples[0], result.samples[2]} <= rows
    assert "backend exploded" in (tmp_path / "run" / "report.md").read_text()
    log = [
        json.loads(line)
        for line in (tmp_path / "run" / "trajectories" / "sample-01.jsonl").read_text().splitlines()
    ]
    (error,) = [e for e in log if e["kind"] == "error"]
    assert "backend exploded" in error["message"]
    assert "Traceback (most recent call last)" in error["traceback"]
    assert ("RuntimeError" if not wrap else "LLMError") in error["traceback"]


@pytest.mark.parametrize("reply", ["I do not know.", "<edit>\nnonsense\n</edit>"])
async def test_malformed_model_output_becomes_observations(
    docker_backend: Any, cache_dir: Path, tmp_path: Path, reply: str
) -> None:
    task = await example_task(cache_dir)
    llm = ScriptedLLM(lambda request: reply)
    config = load_config(
        None, ["samples=1", "testing.max_turns=2", "editing.max_turns=2", "context.relevance=false"]
    )
    result = await Orchestrator(config, llm, docker_backend).solve(task, tmp_path / "run")
    assert result.status == "no_patch" and "no sample produced" in result.message
    log = (tmp_path / "run" / "trajectories" / "sample-00.jsonl").read_text()
    assert "reply with exactly one of" in log or "Your edit was not applied" in log


async def test_a_speculating_engine_reports_draft_and_target_work(
    docker_backend: Any, cache_dir: Path, tmp_path: Path
) -> None:
    """A real engine (tiny random Qwen2, self-draft of 1 layer, ATTS at alpha 0.2) behind the
    budget: the run's summary and report say what the draft and the target wrote."""
    from harness.llm.engine.client import EngineLLM
    from harness.llm.engine.config import EngineConfig, SpecConfig
    from tests.llm.engine.conftest import byte_tokenizer, tiny_model

    window = 1 << 16  # the byte tokenizer makes every character a token
    engine = EngineLLM(
        tiny_model(window=window),
        byte_tokenizer(),
        config=EngineConfig(
            block_size=16, num_blocks=window // 16, max_batched_tokens=4096, max_model_len=window
        ),
        speculation=SpecConfig(k=2, conformal_alpha=0.2, step_max_tokens=8),
        self_draft_layers=1,
    )
    task = await example_task(cache_dir)
    config = load_config(
        None,
        [
            "samples=1",
            "context.enabled=false",
            "testing.max_turns=1",
            "editing.max_turns=1",
            "selection.max_turns=1",
            "testing.max_tokens=48",
            "editing.max_tokens=48",
            "selection.max_tokens=48",
        ],
    )
    llm = BudgetedLLM(engine, Budget())
    try:
        result = await Orchestrator(config, llm, docker_backend).solve(task, tmp_path / "run")
    finally:
        await llm.aclose()
    spec = json.loads((tmp_path / "run" / "summary.json").read_text())["speculation"]
    assert result.speculation == spec  # what `harness eval` records per instance
    assert spec["mode"] == "step" and spec["alpha"] == 0.2
    assert spec["steps_scored"] == spec["steps_accepted"] + spec["steps_rejected"] > 0
    assert spec["draft_tokens"] > 0 and spec["target_tokens"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Draft/target decoding" in report and "steps:" in report


@pytest.mark.parametrize("cap", ["tokens", "dollars"])
async def test_the_pipeline_holds_a_cap_with_concurrent_trajectories_on_a_server(
    docker_backend: Any, cache_dir: Path, tmp_path: Path, cap: str
) -> None:
    """`harness solve`'s own wiring (PipelineSolver: an `openai:` model, the price table, the
    budget, the ledger) with six trajectories at once against a loopback OpenAI-compatible
    server that reports realistic usage: the spend it bills stays within the cap. (The solver
    opens its own docker backend; the fixture marks the test and skips it without Docker.)"""
    from harness.llm.model_store import ModelStore
    from harness.solver import PipelineSolver
    from tests.fixtures.fake_openai import fake_openai

    task = await example_task(cache_dir)
    price = (2.5, 10.0)  # $ per 1M tokens, as the config gives it
    limit = ["budget.max_tokens=15000"] if cap == "tokens" else ["budget.max_usd=0.05"]
    async with fake_openai(respond, latency_s=0.05) as (url, server):
        config = load_config(
            None,
            [
                f"model=openai:oracle?base_url={url}",
                "samples=6",
                "concurrency.llm_calls=8",
                f"prices.oracle=[{price[0]}, {price[1]}]",
                *limit,
            ],
        )
        solver = PipelineSolver(config, cache_dir=cache_dir, store=ModelStore(tmp_path / "m"))
        try:
            result = await solver.solve(task, tmp_path / "run")
        finally:
            await solver.aclose()
    assert server.max_in_flight >= 4, "the trajectories never overlapped"
    billed_usd = (server.prompt_tokens * price[0] + server.completion_tokens * price[1]) / 1e6
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tokens"] == result.tokens == server.billed  # honest usage: counted as billed
    assert summary["cost_usd"] == pytest.approx(billed_usd, abs=1e-6)
    if cap == "tokens":
        assert server.billed <= 15000
    else:
        assert billed_usd <= 0.05
    assert "budget" in [s["status"] for s in summary["samples"]], "the cap never bit"
