"""local backend: NO isolation. Commands run on the host in a temporary copy of the repo.

Only for when the user asks for it explicitly (for example inside a machine that is itself
a throwaway sandbox); the CLI prints a warning. Started by root, it still never runs a
command as root: commands run as an unprivileged uid of their own, without capabilities.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from harness.sandboxes.base import SandboxSpec
from harness.sandboxes.cgroup import Cgroup
from harness.sandboxes.hostdir import (
    HostDirBackend,
    HostDirSandbox,
    agent_path,
    chown_tree,
    copy_tree,
    memory_tmp_root,
    sandbox_uid,
)

WARNING = (
    "the local backend runs commands on this machine without any isolation "
    "(no network cut, no resource limits); use it only inside a disposable machine"
)


# Only these reach commands: never the host's tokens and API keys.
PASSED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "USER",
    "SHELL",
    "VIRTUAL_ENV",
)


class LocalBackend(HostDirBackend):
    name = "local"

    def __init__(self, cache_dir: Path, tmp_root: Path | None = None) -> None:
        super().__init__(cache_dir, tmp_root if tmp_root is not None else memory_tmp_root())
        self.as_root = os.geteuid() == 0

    def agent_env(self, spec: SandboxSpec) -> dict[str, str] | None:
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
        if self.as_root:  # root's home is not the sandbox user's
            env.update(HOME=os.environ.get("TMPDIR", "/tmp"), USER="sandbox")
        return {**env, **spec.env}

    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        return str(root / "work")

    def scratch_for(self, root: Path) -> str:
        return str(root / "scratch")

    async def prepare(
        self, spec: SandboxSpec, root: Path, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        work = root / "work"
        (root / "scratch").mkdir()
        if not self.as_root:
            await (copy_tree(source, work) if source is not None else asyncio.to_thread(work.mkdir))
            return
        root.chmod(0o711)  # the sandbox user reaches work/ and scratch/, never run/
        if parent is not None and source is not None:
            # The parent's tree is its sandbox user's to write: copied as that user (the
            # child keeps the uid), never as root.
            uid = source.stat().st_uid
            await copy_tree(source, work, as_uid=uid)
        else:
            uid = sandbox_uid()
            if source is not None:
                await copy_tree(source, work)  # our own checkout: nothing sandboxed wrote it
                await asyncio.to_thread(chown_tree, work, uid)
            else:
                work.mkdir()
                os.chown(work, uid, uid)
        os.chown(root / "scratch", uid, uid)

    async def seed(
        self, box: HostDirSandbox, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        """Nothing to do: `prepare` copied the tree on the host."""

    async def fork(self, parent: HostDirSandbox) -> HostDirSandbox:
        return await self._start(parent.spec, parent.root / "work", parent.base_commit, parent)

    def agent_argv(
        self, spec: SandboxSpec, root: Path, source: Path | None, cgroup: Cgroup | None
    ) -> list[str]:
        argv = [
            sys.executable,
            agent_path(),
            "--socket",
            str(root / "run" / "agent.sock"),
            "--workdir",
            self.workdir_for(spec, root),
        ]
        if self.as_root:
            uid = (root / "work").stat().st_uid
            argv += ["--run-as", f"{uid}:{uid}"]
        return argv
