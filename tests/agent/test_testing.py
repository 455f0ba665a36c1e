"""The testing stage: a script cut off by the token limit is not run; the model is told."""

from __future__ import annotations

import asyncio
from pathlib import Path

from harness.agent.repro import ReproRunner
from harness.agent.testing import run_testing
from harness.agent.trajectory import Conversation, TrajectoryLog
from harness.llm.base import Sampling
from harness.llm.scripted import ScriptedLLM
from harness.sandboxes import SandboxSpec
from harness.sandboxes.local import LocalBackend
from harness.types import Task
from tests.conftest import make_repo

SCRIPT = "import sys\nfrom calc import add\nsys.exit(0 if add(2, 3) == 5 else 2)\n"


async def test_a_cut_script_is_not_run_and_a_complete_one_is(
    tmp_path: Path, cache_dir: Path
) -> None:
    repo = tmp_path / "repo"
    commit = make_repo(repo, {"calc.py": "def add(a, b):\n    return a - b\n"})
    long = "<test>\n" + SCRIPT + "# " + "z" * 400 + "\n</test>"
    llm = ScriptedLLM([long, f"<test>\n{SCRIPT}</test>", "<done/>"])
    async with (
        LocalBackend(cache_dir) as backend,
        await backend.open(SandboxSpec(repo=repo, commit=commit)) as pristine,
    ):
        runner = ReproRunner(pristine, timeout=60, output_limit=4000, limit=asyncio.Semaphore(1))
        conv = Conversation(
            llm,
            TrajectoryLog.open(tmp_path / "t.jsonl", "sample-00"),
            "testing",
            "t:sample-00",
            Sampling(0.0, max_tokens=40),
            max_turns=4,
        )
        outcome = await run_testing(conv, runner, Task("t", "add", str(repo), commit), "", "")
    told = llm.requests[1].messages[-1].content
    assert told.startswith("Your reply was cut off at the limit of 40 tokens per reply")
    assert "the script is incomplete and was not run" in told
    assert outcome.reproduced and outcome.test is not None and outcome.test.content == SCRIPT
    assert (tmp_path / "t.jsonl").read_text().count('"kind": "exec"') == 1
