"""Where jobs run: in this process (local) or fanned out over a Ray cluster (ray).

Both run the same `Worker.run(job)`. The Ray executor keeps a pool of actors, one CPU each,
on whatever nodes have room; each builds one Worker on its node (its own sandboxes, clones,
images and solver, so a loaded model serves every job the actor runs) and sends back the
records and log texts, never host paths to read. A job runs on an idle actor, or a new one
when none is idle; a cancelled job's actor is killed (its sandboxes go with their leases).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Protocol

from harness.errors import ConfigError
from harness.evals.worker import EvalConfig, Job, JobResult, SolverFactory, Worker

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs jobs; the caller bounds how many are in flight. Use as `async with`."""

    name: str

    async def run(self, job: Job) -> JobResult: ...

    async def __aenter__(self) -> Executor: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class LocalExecutor:
    """Jobs run as coroutines of this process, sharing one Worker."""

    name = "local"

    def __init__(self, config: EvalConfig, solver_factory: SolverFactory | None = None) -> None:
        self._worker = Worker(config, solver_factory)

    async def __aenter__(self) -> LocalExecutor:
        await self._worker.__aenter__()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._worker.__aexit__(t, e, tb)

    async def run(self, job: Job) -> JobResult:
        return await self._worker.run(job)


class _NodeWorker:
    """Body of a Ray actor: one Worker, entered on the first job, for every job it runs."""

    def __init__(self, config: EvalConfig, factory: SolverFactory | None) -> None:
        self._worker = Worker(config, factory)
        self._entered = False

    async def run(self, job: Job) -> JobResult:
        if not self._entered:
            await self._worker.__aenter__()
            self._entered = True
        return await self._worker.run(job)

    async def close(self) -> None:
        if self._entered:
            self._entered = False
            await self._worker.__aexit__(None, None, None)


class RayExecutor:
    """Jobs run on a pool of Ray actors (one CPU each) on whatever nodes have room.

    `address` None starts a local Ray instance sized to `num_cpus` (tests, one machine);
    otherwise connects to a running cluster (`ray start --head` on one node, `ray start
    --address=HEAD:6379` on the others). Every node needs Docker and this package.
    """

    name = "ray"
    close_timeout_s = 120.0  # for an actor to close its Worker (unload a model, containers)

    def __init__(
        self,
        config: EvalConfig,
        solver_factory: SolverFactory | None = None,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
    ) -> None:
        self.config = config
        self.solver_factory = solver_factory
        self.address = address
        self.num_cpus = num_cpus
        self._actor_class: Any = None
        self._idle: list[Any] = []  # actors between jobs
        self._busy: set[Any] = set()
        self._started = False
        self.actors_started = 0

    async def __aenter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "--executor ray needs the `ray` package", hint="pip install 'harness[eval]'"
            ) from exc
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus
                kwargs["object_store_memory"] = 100 * 1024 * 1024  # records are small
            try:
                await asyncio.to_thread(ray.init, **kwargs)
            except Exception as exc:  # ConnectionError, RuntimeError, ...
                where = self.address or "a local instance"
                raise ConfigError(f"could not start Ray ({where}): {exc}") from exc
            self._started = True
        # One job at a time per actor: it holds one CPU, like a task would.
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_concurrency": 1}
        self._actor_class = ray.remote(_NodeWorker).options(**options)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        import ray

        idle, self._idle = self._idle, []
        if idle:
            refs = [actor.close.remote() for actor in idle]
            with contextlib.suppress(Exception):  # a dead actor, a slow close: kill it anyway
                await asyncio.wait_for(asyncio.gather(*refs), self.close_timeout_s)
        for actor in [*idle, *self._busy]:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._busy.clear()
        self._actor_class = None
        if self._started:
            await asyncio.to_thread(ray.shutdown)
            self._started = False

    @property
    def actors(self) -> int:
        """Actors alive now (idle or running a job)."""
        return len(self._idle) + len(self._busy)

    async def run(self, job: Job) -> JobResult:
        if self._actor_class is None:
            raise RuntimeError("use the RayExecutor as `async with`")
        import ray

        if self._idle:
            actor = self._idle.pop()
        else:
            actor = self._actor_class.remote(self.config, self.solver_factory)
            self.actors_started += 1
        self._busy.add(actor)
        try:
            result: JobResult = await actor.run.remote(job)
        except BaseException:
            # Cancelled, or the actor died: it does not come back to the pool.
            self._busy.discard(actor)
            with contextlib.suppress(Exception):
                ray.kill(actor)
            raise
        self._busy.discard(actor)
        self._idle.append(actor)
        return result


def make_executor(
    name: str,
    config: EvalConfig,
    solver_factory: SolverFactory | None = None,
    *,
    ray_address: str | None = None,
    workers: int = 1,
) -> Executor:
    if name == "local":
        return LocalExecutor(config, solver_factory)
    if name == "ray":
        return RayExecutor(config, solver_factory, address=ray_address, num_cpus=workers)
    raise ConfigError(f"unknown executor {name!r}", hint=f"choose one of {', '.join(EXECUTORS)}")
