"""Context recall against a known answer: the files the reference fix touches.

The bundled example's fix touches durations/parse.py. The lexical pre-ranking alone puts it
first; with a model judging relevance (scripted here) the chosen context contains it and drops
files that do not matter. A weak model whose answers are unreadable falls back to the lexical
leaders rather than to nothing; files it calls irrelevant are never kept. Recall on real
repositories (SWE-bench Lite, from local mirrors) is measured by benchmarks/context_recall.py."""

from __future__ import annotations

from pathlib import Path

from examples.scripted.durations_oracle import respond
from harness.agent.context import ContextFinder, recall
from harness.config import ContextConfig
from harness.llm.base import ChatRequest
from harness.llm.scripted import ScriptedLLM
from harness.sandboxes import SandboxSpec
from harness.sandboxes.local import LocalBackend
from harness.tasks import make_task

ROOT = Path(__file__).resolve().parents[2]
GOLD = ["durations/parse.py"]


async def find(
    llm: ScriptedLLM, config: ContextConfig, tmp_path: Path, cache_dir: Path
) -> list[str]:
    task, _ = await make_task(
        str(ROOT / "examples/durations.issue.md"), str(ROOT / "examples/durations"), None, cache_dir
    )
    async with LocalBackend(cache_dir) as backend:
        box = await backend.open(SandboxSpec(repo=Path(task.repo), commit=task.base_commit))
        async with box:
            finder = ContextFinder(llm, config, tmp_path / "context.jsonl", "t")
            result = await finder.find(box, task.issue)
    return result.paths


async def test_lexical_ranking_alone(tmp_path: Path, cache_dir: Path) -> None:
    paths = await find(
        ScriptedLLM([]), ContextConfig(relevance=False, rankings=0), tmp_path, cache_dir
    )
    assert paths[0] == "durations/parse.py" and recall(paths[:1], GOLD) == 1.0
    assert not any(p.startswith("tests/") for p in paths)  # tests are not context


async def test_model_relevance_keeps_the_gold_file_and_drops_the_rest(
    tmp_path: Path, cache_dir: Path
) -> None:
    llm = ScriptedLLM(respond)
    paths = await find(llm, ContextConfig(), tmp_path, cache_dir)
    assert recall(paths, GOLD) == 1.0 and paths == ["durations/parse.py"]
    judged = sum(1 for r in llm.requests if "Would a developer" in r.messages[-1].content)
    assert judged == 4  # every candidate source file was read once
    # Resuming reads the recorded verdicts instead of asking again.
    again = ScriptedLLM(respond)
    assert await find(again, ContextConfig(), tmp_path, cache_dir) == paths
    assert not any("Would a developer" in r.messages[-1].content for r in again.requests)


async def test_unreadable_verdicts_fall_back_to_lexical_leaders(
    tmp_path: Path, cache_dir: Path
) -> None:
    paths = await find(ScriptedLLM(lambda r: "hmm"), ContextConfig(rankings=0), tmp_path, cache_dir)
    assert recall(paths, GOLD) == 1.0 and paths[0] == "durations/parse.py"


async def test_files_the_model_calls_irrelevant_are_never_kept(
    tmp_path: Path, cache_dir: Path
) -> None:
    # Every verdict IRRELEVANT: no file is packed into prompts and no ranking call is made.
    llm = ScriptedLLM(lambda r: "IRRELEVANT: nothing to do with the issue.")
    task, _ = await make_task(
        str(ROOT / "examples/durations.issue.md"), str(ROOT / "examples/durations"), None, cache_dir
    )
    async with LocalBackend(cache_dir) as backend:
        box = await backend.open(SandboxSpec(repo=Path(task.repo), commit=task.base_commit))
        async with box:
            finder = ContextFinder(llm, ContextConfig(), tmp_path / "context.jsonl", "t")
            result = await finder.find(box, task.issue)
    assert result.files == () and result.text == ""
    asked = [r.messages[-1].content for r in llm.requests]
    assert asked and all("Would a developer" in a for a in asked)  # relevance calls only


async def test_unreadable_verdicts_fall_back_but_irrelevant_ones_do_not(
    tmp_path: Path, cache_dir: Path
) -> None:
    def judge(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        return "IRRELEVANT." if "durations/parse.py" in prompt.split("<file")[1] else "hmm"

    llm = ScriptedLLM(judge)
    paths = await find(llm, ContextConfig(), tmp_path, cache_dir)
    assert paths and "durations/parse.py" not in paths
    assert not any("Order these files" in r.messages[-1].content for r in llm.requests)
