"""Sandboxes whose agent is a child process of ours: the `bwrap` and `local` backends.

Each sandbox gets a private host directory (mode 0700) holding the agent's socket directory
and log; subclasses say how the agent is launched, where the work tree lives and how it is
filled (a host copy for local, a size-limited tmpfs inside the sandbox for bwrap).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import pwd
import random
from pathlib import Path

from harness.errors import SandboxError
from harness.sandboxes.base import AgentSandbox, SandboxSpec
from harness.sandboxes.cgroup import Cgroup
from harness.sandboxes.channel import AgentChannel, agent_script_path
from harness.sandboxes.checkout import cached_checkout, resolve_commit
from harness.tempdirs import drop_tempdir, hold_tempdir

UID_BASE = 1 << 30  # sandbox uids: [UID_BASE, UID_BASE + UID_SPAN), never in /etc/passwd
UID_SPAN = 1 << 24


class HostDirBackend(abc.ABC):
    """Common open / fork logic; subclasses say how the agent process is launched."""

    name = "hostdir"

    def __init__(self, cache_dir: Path, tmp_root: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self.tmp_root = tmp_root
        self._open: set[HostDirSandbox] = set()

    async def __aenter__(self) -> HostDirBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @abc.abstractmethod
    def agent_argv(
        self, spec: SandboxSpec, root: Path, source: Path | None, cgroup: Cgroup | None
    ) -> list[str]:
        """The command line that starts the agent for a sandbox rooted at `root`."""

    @abc.abstractmethod
    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        """The work tree's path as commands inside the sandbox see it."""

    @abc.abstractmethod
    def scratch_for(self, root: Path) -> str:
        """A writable directory outside the work tree, as seen inside the sandbox."""

    @abc.abstractmethod
    async def prepare(
        self, spec: SandboxSpec, root: Path, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        """Host-side preparation of a sandbox's directory before its agent starts."""

    @abc.abstractmethod
    async def seed(
        self, box: HostDirSandbox, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        """Fill a started sandbox's work tree: from `source`, or from `parent` on fork."""

    def agent_env(self, spec: SandboxSpec) -> dict[str, str] | None:
        """The agent's environment; None inherits ours (backends that clear it themselves)."""
        return None

    def make_cgroup(self, spec: SandboxSpec) -> Cgroup | None:
        """The cgroup the sandbox runs in; None by default (no limits)."""
        return None

    async def open(self, spec: SandboxSpec) -> HostDirSandbox:
        source: Path | None = None
        if spec.repo is not None:
            commit = await resolve_commit(spec.repo, spec.commit)
            source = await cached_checkout(spec.repo, commit, self.cache_dir)
        return await self._start(spec, source, None, None)

    async def fork(self, parent: HostDirSandbox) -> HostDirSandbox:
        return await self._start(parent.spec, None, parent.base_commit, parent)

    async def _start(
        self,
        spec: SandboxSpec,
        source: Path | None,
        base_commit: str | None,
        parent: HostDirSandbox | None,
    ) -> HostDirSandbox:
        root = hold_tempdir(f"harness-{self.name}-", self.tmp_root)
        cgroup: Cgroup | None = None
        try:
            # The socket's directory: only the agent's uid may write it (never the commands').
            (root / "run").mkdir(mode=0o700)
            await self.prepare(spec, root, source, parent)
            cgroup = await asyncio.to_thread(self.make_cgroup, spec)
            preexec = cgroup.join if cgroup is not None else None
            with open(root / "agent.log", "wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *self.agent_argv(spec, root, source, cgroup),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=self.agent_env(spec),
                    start_new_session=True,
                    preexec_fn=preexec,
                )
        except BaseException:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            drop_tempdir(root)
            raise
        box = HostDirSandbox(
            self, spec, root, proc, self.workdir_for(spec, root), self.scratch_for(root), cgroup
        )
        try:
            await box.start()
            await self.seed(box, source, parent)
            if base_commit is not None:
                box.base_commit = base_commit
            elif spec.repo is not None:
                await box.init_base()
        except BaseException:
            await box.close()
            raise
        self._open.add(box)
        return box

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
        cgroup: Cgroup | None,
    ) -> None:
        super().__init__(backend, spec, AgentChannel(root / "run" / "agent.sock"), workdir, scratch)
        self.root = root
        self.proc = proc
        self.cgroup = cgroup

    @property
    def channel(self) -> AgentChannel:
        return self._channel

    async def start(self) -> None:
        try:
            await self._channel.wait_ready(30.0, alive=lambda: self.proc.returncode is None)
        except SandboxError as exc:
            log = (self.root / "agent.log").read_text(errors="replace").strip()
            raise SandboxError(f"{exc}" + (f":\n{log[-2000:]}" if log else "")) from None

    async def _release(self) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                await self.proc.wait()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(drop_tempdir, self.root)


async def copy_tree(source: Path, dest: Path, as_uid: int | None = None) -> None:
    """cp -a; with `as_uid`, as that user (a tree sandboxed code could write: a symlink it
    swaps in mid-copy then reaches no more than that code itself could)."""
    src = str(source)
    if as_uid is not None:
        dest.mkdir()
        os.chown(dest, as_uid, as_uid)
        src += "/."
    proc = await asyncio.create_subprocess_exec(
        "cp",
        "-a",
        "--reflink=auto",
        src,
        str(dest),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        user=as_uid,
        group=as_uid,
        extra_groups=[] if as_uid is not None else None,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxError(f"copying the work tree failed: {err.decode(errors='replace')}")


def sandbox_uid() -> int:
    """A uid (and gid) for sandboxed commands, outside the range of the host's own users."""
    while True:
        uid = UID_BASE + random.randrange(UID_SPAN)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


def chown_tree(tree: Path, uid: int) -> None:
    """Give a freshly copied tree (nothing sandboxed has touched it yet) to `uid`."""
    os.lchown(tree, uid, uid)
    for top, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(top, name), uid, uid)


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


def agent_path() -> str:
    return str(agent_script_path())
