"""local backend: NO isolation. Commands run on the host in a temporary copy of the repo.

Only for when the user asks for it explicitly (for example inside a machine that is itself
a throwaway sandbox); the CLI prints a warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.sandboxes.base import SandboxSpec
from harness.sandboxes.hostdir import HostDirBackend, agent_path

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

    def agent_env(self, spec: SandboxSpec) -> dict[str, str] | None:
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
        return {**env, **spec.env}

    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        return str(root / "work")

    def scratch_for(self, root: Path) -> str:
        return str(root / "scratch")

    def agent_argv(self, spec: SandboxSpec, root: Path, workdir: str) -> list[str]:
        return [
            sys.executable,
            agent_path(),
            "--socket",
            str(root / "run" / "agent.sock"),
            "--workdir",
            workdir,
        ]
