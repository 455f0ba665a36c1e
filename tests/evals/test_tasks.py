"""Instances as harness Tasks (what `harness solve ID --dataset` runs on)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import TaskError
from harness.evals.dataset import load_instances
from harness.evals.envimages import EnvImages
from harness.evals.repos import RepoCache
from harness.evals.specs import SpecRegistry
from harness.evals.tasks import instance_task, load_instance_task
from harness.sandboxes import SandboxSpec, make_backend
from tests.evals.conftest import Project, env_options
from tests.sandboxes.conftest import skip_unless_available


@pytest.mark.docker
async def test_load_instance_task(project: Project, tmp_path: Path) -> None:
    skip_unless_available("docker")
    ident = project.records[0]["instance_id"]
    task, inst = await load_instance_task(
        str(project.dataset),
        ident,
        cache_dir=tmp_path / "cache",
        git_mirror=project.mirror,
        env_options=env_options(),
        specs=project.registry(),
    )
    assert (task.task_id, task.base_commit) == (ident, inst.base_commit)
    assert task.issue == inst.problem_statement and task.title == "add(2, 3) returns -1"
    assert task.image and task.image.startswith("harness-env:") and task.workdir == "/testbed"
    assert task.metadata["python"] == "3.11" and "hints" not in task.metadata
    # The task's sandbox has the project installed (an editable install into the venv).
    async with make_backend("docker", tmp_path / "cache") as backend:
        box = await backend.open(
            SandboxSpec(repo=Path(task.repo), commit=task.base_commit, image=task.image)
        )
        async with box:
            res = await box.exec("python -c 'import calc; print(calc.add(2, 3))'")
            assert res.ok and res.stdout.strip() == "-1"
            assert await box.diff() == ""  # nothing of the env build shows as a change

    with pytest.raises(TaskError, match="is not in"):
        await load_instance_task(str(project.dataset), "nope-1", cache_dir=tmp_path / "cache")


async def test_no_spec_is_a_task_error(project: Project, tmp_path: Path) -> None:
    inst = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")[0]
    repos = RepoCache(tmp_path / "cache", project.mirror)
    with pytest.raises(TaskError, match="no install spec"):
        await instance_task(
            dataclasses.replace(inst, version="0.0"),
            repos=repos,
            images=EnvImages(tmp_path / "cache", repos),
            specs=SpecRegistry(use_swebench=False),
        )
