"""Where jobs run: in this process (local) or fanned out over a Ray cluster (ray).

Both run the same `Worker.run(job)`; the Ray executor ships the job and the config to a
worker process on some node, which builds its own Worker there (its own sandboxes, clones
and images) and sends back the records and log texts, never host paths to read.
"""

from __future__ import annotations

import asyncio
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


def _run_on_node(config: EvalConfig, factory: SolverFactory | None, job: Job) -> JobResult:
    """Body of the Ray task: a fresh event loop and Worker for one job on some node."""

    async def go() -> JobResult:
        async with Worker(config, factory) as worker:
            return await worker.run(job)

    return asyncio.run(go())


class RayExecutor:
    """Jobs run as Ray tasks (one CPU each) on whatever node has room.

    `address` None starts a local Ray instance sized to `num_cpus` (tests, one machine);
    otherwise connects to a running cluster (`ray start --head` on one node, `ray start
    --address=HEAD:6379` on the others). Every node needs Docker and this package.
    """

    name = "ray"

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
        self._remote: Any = None
        self._started = False

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
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_run_on_node)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._started = False

    async def run(self, job: Job) -> JobResult:
        if self._remote is None:
            raise RuntimeError("use the RayExecutor as `async with`")
        ref = self._remote.remote(self.config, self.solver_factory, job)
        try:
            result: JobResult = await ref
        except asyncio.CancelledError:
            import ray

            ray.cancel(ref, force=True)
            raise
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
