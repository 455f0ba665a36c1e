"""`harness solve` end to end on the bundled example: real docker sandboxes, a scripted model
that fixes the bug (examples/scripted/durations_oracle.py), voting, selection, reports,
budgets, and trajectories that fail without stopping the others."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from examples.scripted.durations_oracle import HALF_RIGHT, RIGHT, respond
from harness.config import load_config
from harness.llm.base import ChatRequest, ChatResponse
from harness.llm.budget import Budget, BudgetedLLM
from harness.llm.scripted import ScriptedLLM
from harness.orchestrator import Orchestrator
from harness.sandboxes import SandboxSpec
from harness.store import read_jsonl
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


class Tracked:
    """A sandbox backend that keeps every sandbox it hands out, forks included."""

    name = "tracked"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.boxes: list[Any] = []

    def keep(self, box: Any) -> TrackedBox:
        self.boxes.append(box)
        return TrackedBox(box, self)

    async def open(self, spec: SandboxSpec) -> TrackedBox:
        return self.keep(await self.backend.open(spec))

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> Tracked:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class TrackedBox:
    def __init__(self, box: Any, owner: Tracked) -> None:
        self.box, self.owner = box, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)

    async def fork(self) -> TrackedBox:
        return self.owner.keep(await self.box.fork())

    async def __aenter__(self) -> TrackedBox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.box.close()


class Holding:
    """The oracle for sample-00; every other trajectory's first call waits until cancelled."""

    model_name = "holding"

    def __init__(self) -> None:
        self.inner = ScriptedLLM(respond)
        self.held = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if not (request.program_id or "").endswith("sample-00"):
            self.held += 1
            await asyncio.Event().wait()
        return await self.inner.chat(request)

    def speculation_stats(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


async def test_a_cancelled_run_awaits_every_task_and_closes_every_sandbox(
    docker_backend: Any, cache_dir: Path, tmp_path: Path
) -> None:
    """Cancelled (a timeout in `harness eval`, a stop in `harness bot`) while two samples wait
    on the model and voting holds sample-00's patched sandbox: every task the run started
    ends with it and every sandbox it opened is closed, not left to the process's exit."""
    task = await example_task(cache_dir)
    tracked = Tracked(docker_backend)
    llm = Holding()
    config = load_config(None, ["samples=3", "context.enabled=false"])
    run = tmp_path / "run"
    before = asyncio.all_tasks()
    job = asyncio.create_task(Orchestrator(config, llm, tracked).solve(task, run))  # type: ignore[arg-type]
    deadline = time.monotonic() + 300
    while not any(r.get("kind") == "cell" for r in read_jsonl(run / "votes.jsonl")):
        assert not job.done(), job
        assert time.monotonic() < deadline, "sample-00 never reached voting"
        await asyncio.sleep(0.2)
    assert llm.held == 2, "the other samples were not running"
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert len(tracked.boxes) >= 3  # the pristine one, sample-00's, voting's
    assert [b for b in tracked.boxes if not b.closed] == []
    await asyncio.sleep(0)  # let finished tasks leave the loop's set
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


SLOW = "import sys, time\ntime.sleep(4)\nprint('slept')\nsys.exit(2)\n"


def slow_scripts(request: ChatRequest) -> str:
    """Every script sleeps 4 s; sample-00 proposes the right fix, sample-01 another one."""
    system = request.messages[0].content
    turns = sum(1 for m in request.messages if m.role == "assistant")
    if "reproduces a reported issue" in system:
        return f"<test>\n{SLOW}</test>" if turns == 0 else "<done/>"
    if "fixing an issue" in system:
        edit = RIGHT if (request.program_id or "").endswith("sample-00") else HALF_RIGHT
        return f"<edit>\n{edit}</edit>" if turns == 0 else "<done/>"
    if "choosing the best of several candidate patches" in system:
        return f"<test>\n{SLOW}</test>" if turns == 0 else "<choose>1</choose>"
    return "<done/>"


async def test_each_stage_runs_scripts_with_its_own_timeout(
    docker_backend: Any, cache_dir: Path, tmp_path: Path
) -> None:
    """testing.exec_timeout (and voting) 60 s, editing.exec_timeout 1 s, selection 1.5 s: the
    same 4-second script passes the testing stage's limit and is cut by the others'."""
    task = await example_task(cache_dir)
    config = load_config(
        None,
        [
            "samples=2",
            "context.enabled=false",
            "testing.exec_timeout=60",
            "editing.exec_timeout=1",
            "selection.exec_timeout=1.5",
        ],
    )
    run = tmp_path / "run"
    await Orchestrator(config, ScriptedLLM(slow_scripts), docker_backend).solve(task, run)
    log = list(read_jsonl(run / "trajectories" / "sample-00.jsonl"))
    runs = {(e["stage"], e["what"]): e["result"] for e in log if e["kind"] == "exec"}
    assert not runs[("testing", "original")]["timed_out"]
    assert runs[("testing", "original")]["exit_code"] == 2
    assert runs[("editing", "patched")]["timed_out"]
    assert runs[("editing", "patched")]["duration_s"] < 30
    cells = [r["run"] for r in read_jsonl(run / "votes.jsonl") if r.get("kind") == "cell"]
    assert len(cells) == 4 and not any(c["timed_out"] for c in cells)
    (compare,) = [e for e in read_jsonl(run / "selection.jsonl") if e["kind"] == "exec"]
    text = compare["result"]
    assert "original code: exit code 2" in text
    assert text.count("(the script timed out)") == 2, text


async def test_a_sample_whose_voting_step_fails_is_an_error_and_the_run_goes_on(
    docker_backend: Any, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Samples run in a task group, where one exception would cancel them all: a failure
    after a sample finished (its test joining voting) ends that sample as `error`, with the
    traceback in its log, and its patch still votes."""
    from harness.selectors.voting import Voting

    add_test = Voting.add_test

    async def flaky(self: Voting, test_id: str, test: Any) -> None:
        if test_id == "sample-01":
            raise RuntimeError("the original-code run broke")
        await add_test(self, test_id, test)

    monkeypatch.setattr(Voting, "add_test", flaky)
    task = await example_task(cache_dir)
    config = load_config(None, ["samples=3", "context.enabled=false"])
    result = await Orchestrator(config, ScriptedLLM(respond), docker_backend).solve(
        task, tmp_path / "run"
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    statuses = {s["sample_id"]: s["status"] for s in summary["samples"]}
    assert statuses == {"sample-00": "finished", "sample-01": "error", "sample-02": "finished"}
    assert "the original-code run broke" in summary["samples"][1]["message"]
    votes = json.loads((tmp_path / "run" / "votes.json").read_text())
    assert "sample-01" in votes["candidates"] and "sample-01" not in votes["tests"]
    assert result.status == "patched"
    log = list(read_jsonl(tmp_path / "run" / "trajectories" / "sample-01.jsonl"))
    (error,) = [e for e in log if e["kind"] == "error"]
    assert error["stage"] == "voting" and "RuntimeError" in error["traceback"]


async def test_sandboxes_get_every_limit_of_the_config(
    cache_dir: Path, docker_backend: Any
) -> None:
    config = load_config(
        overrides=[
            "sandbox.cpus=1.5",
            "sandbox.memory_mb=512",
            "sandbox.pids=64",
            "sandbox.disk_mb=256",
            "sandbox.network=true",
        ]
    )
    task = await example_task(cache_dir)
    spec = Orchestrator(config, ScriptedLLM(respond), docker_backend)._sandbox_spec(task)
    limits = spec.limits
    assert (limits.cpus, limits.memory_mb, limits.pids, limits.disk_mb) == (1.5, 512, 64, 256)
    assert spec.network and spec.repo == Path(task.repo)
