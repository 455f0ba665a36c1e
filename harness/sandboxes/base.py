"""The Sandbox protocol, what opening one takes, and the behaviour all backends share.

A sandbox is a repository checked out at a base commit, isolated from the host, that runs
commands with a timeout and capped output. Backends differ only in how they start the
in-sandbox agent (`channel.py`); everything else (files, patches, diffs) lives here.
"""

from __future__ import annotations

import abc
import shlex
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from harness.errors import SandboxError
from harness.sandboxes.channel import AgentChannel, OutputCallback
from harness.sandboxes.checkout import SAFE_GIT
from harness.types import ExecResult, PatchResult

DEFAULT_CAP = 1 << 20  # bytes kept per stream (head + tail); the rest is middle-truncated
GIT = SAFE_GIT  # hooks and fsmonitor off: the repositories are third-party
# Variables that point HTTPS clients (openssl, pip, requests, curl, git, node) at a CA bundle.
CA_ENV = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)
DIFF_EXCLUDES = (":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox; docs/security.md says what holds on which backend."""

    cpus: float = 2.0
    memory_mb: int = 4096  # everything inside together (cgroup), not per process
    pids: int = 1024
    disk_mb: int = 4096  # each writable file system: the work tree, /tmp


@dataclass(frozen=True)
class SandboxSpec:
    """What to open: a repository at a commit (or an image's own work tree), and how."""

    repo: Path | None = None  # host git repository; None = the image's workdir as it is
    commit: str = "HEAD"
    image: str | None = None  # backend-specific; None = the backend's default
    workdir: str = "/testbed"
    network: bool = False
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    ca_bundle: Path | None = None  # extra CA certificates for HTTPS through TLS proxies
    default_timeout: float = 600.0
    output_cap: int = DEFAULT_CAP


@runtime_checkable
class Sandbox(Protocol):
    """An isolated work tree at a base commit. Use as `async with`."""

    @property
    def workdir(self) -> str: ...

    @property
    def scratch(self) -> str:
        """A writable directory outside the work tree (never part of the diff)."""
        ...

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecResult: ...

    async def read_file(self, path: str) -> str: ...

    async def write_file(
        self, path: str, content: str | bytes, mode: int | None = None
    ) -> None: ...

    async def apply_patch(self, diff: str) -> PatchResult: ...

    async def diff(self) -> str: ...

    async def fork(self) -> Sandbox: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Sandbox: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class SandboxBackend(Protocol):
    """Opens sandboxes of one kind. Use as `async with` so leftovers are cleaned up (leaving
    it is `aclose`)."""

    name: str

    async def open(self, spec: SandboxSpec) -> Sandbox: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> SandboxBackend: ...

    async def __aexit__(self, *exc: object) -> None: ...


class AgentSandbox(abc.ABC):
    """Shared behaviour on top of an agent channel; subclasses start and stop the agent."""

    def __init__(
        self,
        backend: _Owner,
        spec: SandboxSpec,
        channel: AgentChannel,
        workdir: str,
        scratch: str,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self._channel = channel
        self._workdir = workdir
        self._scratch = scratch
        self.base_commit: str | None = None
        self.closed = False
        self.stopped: str | None = None  # why the backend stopped it (a limit), if it did

    @property
    def workdir(self) -> str:
        return self._workdir

    @property
    def scratch(self) -> str:
        return self._scratch

    async def __aenter__(self) -> AgentSandbox:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """Run `cmd` (a shell string for bash, or an argv list) in the work tree."""
        if self.closed:
            raise SandboxError("this sandbox is closed")
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not argv:
            raise SandboxError("empty command")
        start = time.monotonic()
        try:
            if self.stopped is None:
                return await self._channel.exec(
                    argv,
                    timeout=self.spec.default_timeout if timeout is None else timeout,
                    cwd=cwd,
                    env={**self.spec.env, **(env or {})},
                    stdin=stdin,
                    cap=self.spec.output_cap,
                    on_output=on_output,
                )
        except SandboxError:
            if self.stopped is None:
                raise
        # A sandbox stopped for going over a limit answers every command with that: the
        # model sees why, as it would see any failing command.
        return ExecResult(137, "", f"harness: {self.stopped}\n", time.monotonic() - start)

    async def read_file(self, path: str) -> str:
        """Read a file (relative paths are inside the work tree)."""
        return (await self._channel.read(path)).decode("utf-8", "replace")

    async def write_file(self, path: str, content: str | bytes, mode: int | None = None) -> None:
        data = content.encode() if isinstance(content, str) else content
        await self._channel.write(path, data, mode)

    async def init_base(self) -> None:
        """Record the base commit the work tree starts from (called once on open)."""
        res = await self.exec([*GIT, "rev-parse", "HEAD"], timeout=60)
        self.base_commit = res.stdout.strip() if res.ok else None

    async def diff(self) -> str:
        """Unified diff of the work tree (including new files) against the base commit."""
        if self.base_commit is None:
            raise SandboxError("this sandbox has no git repository, so there is no diff")
        script = (
            f"{shlex.join(GIT)} add -A -- . {shlex.join(DIFF_EXCLUDES)} >/dev/null 2>&1; "
            f"{shlex.join(GIT)} diff --cached {self.base_commit} -- . {shlex.join(DIFF_EXCLUDES)}"
        )
        res = await self.exec(script, timeout=120)
        if res.exit_code != 0:
            raise SandboxError(f"git diff failed: {res.stderr.strip()}")
        return res.stdout

    async def apply_patch(self, diff: str) -> PatchResult:
        """Apply a unified diff: `git apply`, then `patch --fuzz`; on failure nothing changes."""
        if not diff.strip():
            return PatchResult(False, reason="empty patch")
        if not diff.endswith("\n"):
            diff += "\n"
        path = f"{self._scratch}/patch-{uuid.uuid4().hex[:8]}.diff"
        await self.write_file(path, diff)
        q = shlex.quote(path)
        git = shlex.join(GIT)
        check = await self.exec(f"{git} apply --check --whitespace=nowarn {q}", timeout=120)
        if check.exit_code == 0:
            res = await self.exec(f"{git} apply --whitespace=nowarn {q}", timeout=120)
            if res.exit_code == 0:
                return PatchResult(True, "git-apply")
        fuzz = "patch --batch --forward --no-backup-if-mismatch --reject-file=- --fuzz=3 -p1"
        dry = await self.exec(f"{fuzz} --dry-run -i {q}", timeout=120)
        if dry.exit_code == 0:
            res = await self.exec(f"{fuzz} -i {q}", timeout=120)
            if res.exit_code == 0:
                return PatchResult(True, "patch-fuzz")
        reason = (
            f"git apply: {check.output.strip() or 'failed'}\n"
            f"patch --fuzz: {dry.output.strip() or 'failed'}"
        )
        return PatchResult(False, reason=reason)

    async def fork(self) -> AgentSandbox:
        """A new sandbox with a copy of this one's current work tree."""
        if self.closed:
            raise SandboxError("cannot fork a closed sandbox")
        return await self.backend.fork(self)

    async def close(self) -> None:
        """Stop the agent and release everything this sandbox holds (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.backend.forget(self)
        await self._channel.close()
        await self._release()

    @abc.abstractmethod
    async def _release(self) -> None:
        """Free what the backend allocated (container, process, directories)."""


class _Owner(Protocol):
    """What a sandbox needs from the backend that opened it."""

    async def fork(self, parent: Any) -> AgentSandbox: ...

    def forget(self, box: Any) -> None: ...
