"""bubblewrap backend for machines without Docker: network unshared, only the work tree
(and a private /tmp) writable, users' home directories hidden.

The root file system is the host's (read-only) or, with `image`, a root file-system
directory such as one made by debootstrap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.errors import SandboxUnavailable
from harness.sandboxes.base import CA_ENV, SandboxSpec
from harness.sandboxes.hostdir import HostDirBackend, agent_path, set_memory_rlimit

SKIP = {"proc", "dev", "sys", "tmp", "run", "home", "root", "lost+found"}
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BwrapBackend(HostDirBackend):
    name = "bwrap"

    def __init__(self, cache_dir: Path, tmp_root: Path | None = None) -> None:
        super().__init__(cache_dir, tmp_root)
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed",
                hint="`sudo apt-get install bubblewrap`, or use `--backend docker`",
            )

    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        return spec.workdir

    def scratch_for(self, root: Path) -> str:
        return "/tmp/.harness"

    def preexec(self, spec: SandboxSpec) -> None:
        set_memory_rlimit(spec.limits.memory_mb)

    def agent_argv(self, spec: SandboxSpec, root: Path, workdir: str) -> list[str]:
        assert self.bwrap is not None
        source = Path(spec.image) if spec.image else Path("/")
        argv = [
            self.bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        if spec.network:
            argv.append("--share-net")
        top = spec.workdir.strip("/").split("/")[0]
        for entry in sorted(os.listdir(source)):
            path = source / entry
            if entry in SKIP or entry == top or entry == ".harness":
                continue
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), f"/{entry}"]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), f"/{entry}"]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--dir",
            "/tmp/.harness",
            "--tmpfs",
            "/home",
            "--tmpfs",
            "/root",
            "--bind",
            str(root / "work"),
            spec.workdir,
            "--bind",
            str(root / "run"),
            "/.harness/run",
            "--ro-bind",
            agent_path(),
            "/.harness/agent.py",
        ]
        if spec.ca_bundle is not None:
            argv += ["--ro-bind", str(spec.ca_bundle.resolve()), "/.harness/ca-bundle.crt"]
        env = {"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8", **spec.env}
        if spec.ca_bundle is not None:
            for name in CA_ENV:
                env[name] = "/.harness/ca-bundle.crt"
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv += [
            "--chdir",
            spec.workdir,
            "python3",
            "/.harness/agent.py",
            "--socket",
            "/.harness/run/agent.sock",
            "--workdir",
            spec.workdir,
        ]
        return argv
