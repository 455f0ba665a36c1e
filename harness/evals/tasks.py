"""Turn a data-set instance into a harness Task (what `harness solve ID --dataset` runs).

The task's repository is a shallow checkout at the base commit (no later history for an
agent to find), and its image is the instance's environment image, so the solver's
sandboxes have the project installed exactly as grading will.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import TaskError
from harness.evals.dataset import Instance, load_instances
from harness.evals.envimages import EnvImage, EnvImages, EnvOptions
from harness.evals.repos import RepoCache
from harness.evals.specs import SpecRegistry
from harness.types import Task


async def instance_task(
    inst: Instance,
    *,
    repos: RepoCache,
    images: EnvImages,
    specs: SpecRegistry,
    include_hints: bool = False,
) -> tuple[Task, EnvImage]:
    """The Task for `inst` and its environment image (built if needed).

    Raises RepoError (no clone or mirror), EnvBuildFailed (image) or TaskError (no spec).
    """
    spec = specs.get(inst.repo, inst.version)
    if spec is None:
        raise TaskError(
            f"no install spec for {inst.repo} version {inst.version!r}",
            hint="register one with --specs FILE ({repo: {version: {python, test_cmd, ...}}})",
        )
    env = await images.ensure(inst, spec)
    checkout = await repos.checkout(inst.repo, inst.base_commit)
    metadata = {
        "dataset_repo": inst.repo,
        "version": inst.version,
        "python": env.python_used,
        "env_image": env.tag,
    }
    if env.activate:  # official images: the environment is a conda env to activate first
        metadata["activate"] = env.activate
    if include_hints and inst.hints_text:
        metadata["hints"] = inst.hints_text
    title = next((line.strip() for line in inst.problem_statement.splitlines() if line.strip()), "")
    task = Task(
        task_id=inst.instance_id,
        issue=inst.problem_statement,
        repo=str(checkout),
        base_commit=inst.base_commit,
        image=env.tag,
        workdir="/testbed",
        title=title[:200],
        metadata=metadata,
    )
    return task, env


async def load_instance_task(
    dataset: str,
    instance_id: str,
    *,
    cache_dir: Path,
    split: str = "test",
    git_mirror: str | None = None,
    env_options: EnvOptions | None = None,
    specs: SpecRegistry | None = None,
    include_hints: bool = False,
) -> tuple[Task, Instance]:
    """Load one instance of a data set and make its Task (for `harness solve ID --dataset`)."""
    instances = load_instances(dataset, split=split)
    found = next((i for i in instances if i.instance_id == instance_id), None)
    if found is None:
        raise TaskError(
            f"instance {instance_id!r} is not in {dataset} ({split})",
            hint="ids look like django__django-11099; `harness eval run --filter` lists by regex",
        )
    repos = RepoCache(cache_dir, git_mirror)
    images = EnvImages(cache_dir, repos, env_options)
    try:
        task, _ = await instance_task(
            found,
            repos=repos,
            images=images,
            specs=specs or SpecRegistry(),
            include_hints=include_hints,
        )
    finally:
        await images.aclose()
    return task, found
