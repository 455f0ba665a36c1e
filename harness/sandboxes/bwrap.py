"""bubblewrap backend for machines without Docker: network unshared, the host read-only, the
work tree and /tmp size-limited tmpfs inside the sandbox, users' home directories hidden.

Commands never run as root nor with a capability. Started by root, bwrap creates no user
namespace: the agent keeps only CAP_SETUID/SETGID/CHOWN and runs every command as a fresh
unprivileged uid of its own per sandbox. Started by a user, bwrap maps that user into a user
namespace and nobody inside holds a capability. A cgroup bounds total memory, processes and
CPU (cgroup.py); where none can be made, rlimits do what they can (docs/security.md).
The root file system is the host's (read-only) or, with `image`, a root file-system
directory such as one made by debootstrap.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import warnings
from pathlib import Path

from harness.errors import SandboxUnavailable
from harness.sandboxes.base import CA_ENV, SandboxSpec
from harness.sandboxes.cgroup import Cgroup
from harness.sandboxes.checkout import readable_by_all
from harness.sandboxes.hostdir import HostDirBackend, HostDirSandbox, agent_path, sandbox_uid

SKIP = {"proc", "dev", "sys", "tmp", "run", "home", "root", "lost+found"}
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SRC = "/.harness/src"  # the checkout, read-only, that the agent copies into the work tree
# What the agent keeps when root starts bwrap: drop to the sandbox uid, own the work tree.
AGENT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN")
NO_CGROUP_WARNING = (
    "no cgroup can be created here (cgroup v2 without a delegated subtree, or not root): "
    "bwrap sandboxes fall back to rlimits, so memory is limited per process, not in total"
)


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
        self.as_root = os.geteuid() == 0
        self._warned = False
        self._disable_userns = "--disable-userns" in _help(self.bwrap)

    def workdir_for(self, spec: SandboxSpec, root: Path) -> str:
        return spec.workdir

    def scratch_for(self, root: Path) -> str:
        return "/tmp/.harness"

    def make_cgroup(self, spec: SandboxSpec) -> Cgroup | None:
        cgroup = Cgroup.create(spec.limits)
        if cgroup is None and not self._warned:
            self._warned = True
            warnings.warn(NO_CGROUP_WARNING, stacklevel=2)
        return cgroup

    async def prepare(
        self, spec: SandboxSpec, root: Path, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        """Nothing on the host (the work tree is a tmpfs inside the sandbox), except making
        a checkout cached by an older version readable by the sandbox's uid."""
        if source is not None and self.as_root and source.stat().st_mode & 0o005 != 0o005:
            await asyncio.to_thread(readable_by_all, source)

    async def seed(
        self, box: HostDirSandbox, source: Path | None, parent: HostDirSandbox | None
    ) -> None:
        await box.channel.setup(
            src=SRC if source is not None else None, scratch=box.scratch, own_workdir=True
        )
        if parent is not None:
            await parent.channel.copy_tree_to(box.channel)

    def agent_argv(
        self, spec: SandboxSpec, root: Path, source: Path | None, cgroup: Cgroup | None
    ) -> list[str]:
        assert self.bwrap is not None
        image = Path(spec.image) if spec.image else Path("/")
        disk = str(spec.limits.disk_mb << 20)
        argv = [
            self.bwrap,
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        if not spec.network:
            argv.append("--unshare-net")
        agent_opts: list[str] = []
        env = {"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8"}
        if self.as_root:
            # No user namespace (one would map the sandbox to host root): the agent keeps
            # three capabilities and every command runs as a uid no one else uses.
            argv += ["--cap-drop", "ALL"]
            for cap in AGENT_CAPS:
                argv += ["--cap-add", cap]
            uid = sandbox_uid()
            agent_opts += ["--run-as", f"{uid}:{uid}"]
            env.update(USER="sandbox", LOGNAME="sandbox")
        else:
            argv.append("--unshare-user")
            if self._disable_userns:
                argv.append("--disable-userns")
        if cgroup is None:
            limits = spec.limits
            agent_opts += ["--rlimit", f"nproc={limits.pids}"]
            agent_opts += ["--rlimit", f"as={limits.memory_mb << 20}"]
        top = spec.workdir.strip("/").split("/")[0]
        for entry in sorted(os.listdir(image)):
            path = image / entry
            if entry in SKIP or entry == top or entry == ".harness":
                continue
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), f"/{entry}"]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), f"/{entry}"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--size", disk, "--perms", "1777", "--tmpfs", "/dev/shm"]
        argv += ["--size", disk, "--perms", "1777", "--tmpfs", "/tmp"]
        argv += ["--size", disk, "--perms", "0755", "--tmpfs", spec.workdir]
        for hidden in ("/home", "/root"):
            argv += ["--size", str(1 << 20), "--tmpfs", hidden]
        argv += ["--perms", "0755", "--dir", "/.harness"]  # run/ inside it is 0700
        argv += ["--bind", str(root / "run"), "/.harness/run"]
        argv += ["--ro-bind", agent_path(), "/.harness/agent.py"]
        if source is not None:
            argv += ["--ro-bind", str(source), SRC]
        if spec.ca_bundle is not None:
            argv += ["--ro-bind", str(spec.ca_bundle.resolve()), "/.harness/ca-bundle.crt"]
            for name in CA_ENV:
                env[name] = "/.harness/ca-bundle.crt"
        for key, value in {**env, **spec.env}.items():
            argv += ["--setenv", key, value]
        argv += [
            "--chdir",
            "/",
            "python3",
            "/.harness/agent.py",
            "--socket",
            "/.harness/run/agent.sock",
            "--workdir",
            spec.workdir,
            *agent_opts,
        ]
        return argv


def _help(bwrap: str) -> str:
    try:
        return subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
