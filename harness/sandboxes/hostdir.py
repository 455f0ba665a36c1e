"""Sandboxes whose work tree is a host directory: the `bwrap` and `local` backends.

The work tree is copied from the cached checkout (`cp --reflink=auto`), so opening and
forking cost one copy; the in-sandbox agent runs as a child process of ours.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import resource
from pathlib import Path

from harness.errors import SandboxError
from harness.sandboxes.base import AgentSandbox, SandboxSpec
from harness.sandboxes.channel import AgentChannel, agent_script_path
from harness.sandboxes.checkout import cached_checkout, resolve_commit
from harness.tempdirs import drop_tempdir, hold_tempdir


class HostDirBackend(abc.ABC):
    """Common open / fork logic; subclasses say how the agent process is launched."""

    name = "hostdir"

    def __init__(self, cache_dir: Path, tmp_root: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self.tmp_root = tmp_root if tmp_root is not None else memory_tmp_root()
        self._open: set[HostDirSandbox] = set()

    async def __aenter__(self) -> HostDirBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @abc.abstractmethod
    def agent_argv(self, spec: SandboxSpec, root: Path, workdir: str) -> list[str]:
        """The command line that starts the agent for a sandbox rooted at `root`."""

    @abc.abstractmethod
    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        """The work tree's path as commands inside the sandbox see it."""

    @abc.abstractmethod
    def scratch_for(self, root: Path) -> str:
        """A writable directory outside the work tree, as seen inside the sandbox."""

    def agent_env(self, spec: SandboxSpec) -> dict[str, str] | None:
        """The agent's environment; None inherits ours (backends that clear it themselves)."""
        return None

    def preexec(self, spec: SandboxSpec) -> None:  # noqa: B027 - optional hook
        """Runs in the agent's child process before exec (rlimits); nothing by default."""

    async def open(self, spec: SandboxSpec) -> HostDirSandbox:
        source: Path | None = None
        if spec.repo is not None:
            commit = await resolve_commit(spec.repo, spec.commit)
            source = await cached_checkout(spec.repo, commit, self.cache_dir)
        return await self._start(spec, source, base_commit=None)

    async def _start(
        self, spec: SandboxSpec, source: Path | None, base_commit: str | None
    ) -> HostDirSandbox:
        root = hold_tempdir(f"harness-{self.name}-", self.tmp_root)
        try:
            work = root / "work"
            if source is not None:
                await _copy_tree(source, work)
            else:
                work.mkdir()
            (root / "run").mkdir()
            (root / "scratch").mkdir()
            workdir = self.workdir_for(spec, root)
            with open(root / "agent.log", "wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *self.agent_argv(spec, root, workdir),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=self.agent_env(spec),
                    start_new_session=True,
                    preexec_fn=lambda: self.preexec(spec),
                )
        except BaseException:
            drop_tempdir(root)
            raise
        box = HostDirSandbox(self, spec, root, proc, workdir, self.scratch_for(root))
        try:
            await box.start(base_commit)
        except BaseException:
            await box.close()
            raise
        self._open.add(box)
        return box

    async def fork(self, parent: HostDirSandbox) -> HostDirSandbox:
        return await self._start(parent.spec, parent.root / "work", parent.base_commit)

    def forget(self, box: HostDirSandbox) -> None:
        self._open.discard(box)

    async def aclose(self) -> None:
        for box in list(self._open):
            await box.close()


class HostDirSandbox(AgentSandbox):
    def __init__(
        self,
        backend: HostDirBackend,
        spec: SandboxSpec,
        root: Path,
        proc: asyncio.subprocess.Process,
        workdir: str,
        scratch: str,
    ) -> None:
        super().__init__(backend, spec, AgentChannel(root / "run" / "agent.sock"), workdir, scratch)
        self.root = root
        self.proc = proc

    async def start(self, base_commit: str | None) -> None:
        try:
            await self._channel.wait_ready(30.0, alive=lambda: self.proc.returncode is None)
        except SandboxError as exc:
            log = (self.root / "agent.log").read_text(errors="replace").strip()
            raise SandboxError(f"{exc}" + (f":\n{log[-2000:]}" if log else "")) from None
        if base_commit is not None:
            self.base_commit = base_commit
        elif self.spec.repo is not None:
            await self.init_base()

    async def _release(self) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                await self.proc.wait()
        await asyncio.to_thread(drop_tempdir, self.root)


async def _copy_tree(source: Path, dest: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "cp",
        "-a",
        "--reflink=auto",
        str(source),
        str(dest),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxError(f"copying the work tree failed: {err.decode(errors='replace')}")


def memory_tmp_root(min_free: int = 2 << 30) -> Path | None:
    """/dev/shm when it is writable with room to spare, else None (the system temp dir).

    Work trees are copied on every open and fork; on a RAM file system that takes a fraction
    of a second for a few thousand files, where a VM disk can take several seconds.
    """
    shm = Path("/dev/shm")
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and stat.f_bavail * stat.f_frsize >= min_free:
        return shm
    return None


def set_memory_rlimit(memory_mb: int) -> None:
    """Best-effort memory cap where no cgroup is available (address space, per process)."""
    limit = memory_mb * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def agent_path() -> str:
    return str(agent_script_path())
