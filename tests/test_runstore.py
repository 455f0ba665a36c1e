"""The run directory: a task and config written by a run read back equal (also from a run
directory the previous version wrote), and a directory that is not a run's is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import TaskError
from harness.runstore import RunStore
from harness.types import Task

TASK = Task(
    "octo__calc-7",
    "add() subtracts\n\n```python\n>>> add(2, 3)\n-1\n```\n",
    "/srv/checkouts/calc",
    "0123456789abcdef0123456789abcdef01234567",
    image="harness-env:calc",
    workdir="/work",
    title="add() subtracts",
    metadata={"github_issue": "octo/calc#7", "trigger": "label-1"},
)


def test_a_run_reads_back_its_task_and_config(tmp_path: Path) -> None:
    config = load_config(None, ["samples=3", "editing.exec_timeout=7.5", "prices.m=[1, 2]"])
    store = RunStore(tmp_path / "run")
    assert not store.exists()
    store.create(TASK, config)
    assert store.exists()
    task, loaded = RunStore(tmp_path / "run").load()
    assert task == TASK and task.metadata == TASK.metadata  # (metadata is not compared)
    assert loaded == config


def test_a_run_directory_of_the_previous_version_resumes(tmp_path: Path) -> None:
    """task.json as the orchestrator wrote it field by field before the run store."""
    run = tmp_path / "old"
    run.mkdir()
    (run / "task.json").write_text(
        json.dumps(
            {
                "base_commit": TASK.base_commit,
                "image": None,
                "issue": TASK.issue,
                "metadata": {},
                "repo": TASK.repo,
                "task_id": TASK.task_id,
                "title": "",
                "workdir": "/testbed",
            },
            indent=2,
            sort_keys=True,
        )
    )
    (run / "config.yaml").write_text("model: smollm2-135m\nsamples: 2\n")
    task, config = RunStore(run).load()
    assert (task.task_id, task.issue, task.repo, task.image) == (
        TASK.task_id,
        TASK.issue,
        TASK.repo,
        None,
    )
    assert config.samples == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"is not a run directory \(no task.json\)"),
        ("{not json", "cannot be read: Expecting property name"),
        ('["a", "list"]', "a task is a JSON object, not list"),
        ('{"task_id": "t", "repo": "/r", "base_commit": "abc"}', "'issue' is missing"),
        ('{"task_id": "t", "issue": "i", "repo": "/r", "base_commit": 7}', "'base_commit'"),
        (
            '{"task_id": "t", "issue": "i", "repo": "/r", "base_commit": "a", "metadata": [1]}',
            "'metadata' is not a mapping",
        ),
    ],
)
def test_what_is_not_a_run_directory_is_a_task_error_with_a_hint(
    tmp_path: Path, content: str | None, message: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "task.json").write_text(content)
    with pytest.raises(TaskError, match=message) as caught:
        RunStore(run).load()
    assert caught.value.hint is not None and "harness solve" in caught.value.hint
