"""local backend: NO isolation. Commands run on the host in a temporary copy of the repo.

Only for when the user asks for it explicitly (for example inside a machine that is itself
a throwaway sandbox); the CLI prints a warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.sandboxes.base import SandboxSpec
from harness.sandboxes.cgroup import Cgroup
from harness.sandboxes.hostdir import (
    HostDirBackend,
    HostDirSandbox,
    agent_path,
    copy_tree,
    memory_tmp_root,
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

    def agent_env(self, spec: SandboxSpec) -> dict[str, str] | None:
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
        return {**env, **spec.env}

    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        return str(root / "work")

    def scratch_for(self, root: Path) -> str:
        return str(root / "scratch")

    async def prepare(self, spec: SandboxSpec, root: Path, source: Path | None) -> None:
        (root / "scratch").mkdir()
        if source is not None:
            await copy_tree(source, root / "work")
        else:
            (root / "work").mkdir()

    async def seed(
        self, box: HostDirSandbox, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        """Nothing to do: `prepare` copied the tree on the host."""

    async def fork(self, parent: HostDirSandbox) -> HostDirSandbox:
        return await self._start(parent.spec, parent.root / "work", parent.base_commit, None)

    def agent_argv(
        self, spec: SandboxSpec, root: Path, source: Path | None, cgroup: Cgroup | None
    ) -> list[str]:
        return [
            sys.executable,
            agent_path(),
            "--socket",
            str(root / "run" / "agent.sock"),
            "--workdir",
            self.workdir_for(spec, root),
        ]
