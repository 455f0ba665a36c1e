"""A cgroup per bwrap sandbox: total memory, processes and CPU of everything inside it.

Uses cgroup v2 where this process may create child cgroups with the memory and pids
controllers (a delegated subtree, or a writable hierarchy root), else cgroup v1 memory and
pids hierarchies it can write (as root on hybrid/v1 machines). Where neither works,
`Cgroup.create` returns None and the caller falls back to rlimits (see docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.sandboxes.base import Limits

PREFIX = "harness-"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Cgroup:
    """One sandbox's cgroup: a directory per hierarchy (one on v2)."""

    dirs: tuple[Path, ...]
    version: int

    @classmethod
    def create(cls, limits: Limits) -> Cgroup | None:
        """A fresh cgroup with `limits` applied, or None when none can be made here."""
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        mounts = _mounts()
        for make in (_create_v2, _create_v1):
            made = make(mounts, name, limits)
            if made is not None:
                return made
        return None

    def join(self) -> None:
        """Move the calling process into the cgroup (run in the child before exec)."""
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as fh:
                fh.write("0")

    def remove(self, wait_s: float = 5.0) -> None:
        """Remove the cgroup once its processes are gone (idempotent)."""
        deadline = time.monotonic() + wait_s
        for d in self.dirs:
            while d.exists():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    _kill_members(d)
                    time.sleep(0.02)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fstype, super options) of cgroup mounts."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3 or not rest[0].startswith("cgroup"):
                continue
            found.append((fields[4], fields[3], rest[0], set(rest[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our cgroup path per v1 controller, and under "" the v2 one (from /proc/self/cgroup)."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    return paths


def _under(mount: str, root: str, path: str) -> Path:
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return Path(mount) / path.lstrip("/")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _create_v2(
    mounts: list[tuple[str, str, str, set[str]]], name: str, lim: Limits
) -> Cgroup | None:
    own = _own_paths().get("")
    mount = next((m for m in mounts if m[2] == "cgroup2"), None)
    if own is None or mount is None:
        return None
    here = _under(mount[0], mount[1], own)
    # A cgroup that holds processes cannot hand controllers to children (except the root):
    # the sandbox goes next to us, under the nearest cgroup that enables memory and pids.
    top = Path(mount[0])
    for parent in (here, here.parent) if here != top else (here,):
        try:
            enabled = set((parent / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids"} <= enabled:
                if parent != top:
                    continue
                _write(parent / "cgroup.subtree_control", "+memory +pids")
            d = parent / name
            d.mkdir()
        except OSError:
            continue
        try:
            _sweep(parent)
            _write(d / "memory.max", str(lim.memory_mb << 20))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(lim.pids))
            if "cpu" in (d / "cgroup.controllers").read_text().split():
                _write(d / "cpu.max", f"{int(lim.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        except OSError:
            with contextlib.suppress(OSError):
                d.rmdir()
            continue
        return Cgroup((d,), 2)
    return None


def _create_v1(
    mounts: list[tuple[str, str, str, set[str]]], name: str, lim: Limits
) -> Cgroup | None:
    own = _own_paths()
    made: list[Path] = []

    def hierarchy(controller: str) -> Path | None:
        mount = next((m for m in mounts if m[2] == "cgroup" and controller in m[3]), None)
        if mount is None or controller not in own:
            return None
        return _under(mount[0], mount[1], own[controller])

    try:
        for controller in ("memory", "pids"):
            parent = hierarchy(controller)
            if parent is None:
                raise OSError(f"no writable {controller} hierarchy")
            _sweep(parent)
            (parent / name).mkdir()
            made.append(parent / name)
        memory, pids = made
        _write(memory / "memory.limit_in_bytes", str(lim.memory_mb << 20))
        if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting is on
            _write(memory / "memory.memsw.limit_in_bytes", str(lim.memory_mb << 20))
        _write(pids / "pids.max", str(lim.pids))
    except OSError:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        return None
    cpu = hierarchy("cpu")
    with contextlib.suppress(OSError):  # CPU is a share, not a safety limit: best effort
        if cpu is not None:
            (cpu / name).mkdir()
            made.append(cpu / name)
            _write(cpu / name / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / name / "cpu.cfs_quota_us", str(int(lim.cpus * CPU_PERIOD_US)))
    return Cgroup(tuple(made), 1)


def _sweep(parent: Path) -> None:
    """Remove empty cgroups left by harness processes that died (kill -9)."""
    with contextlib.suppress(OSError):
        for d in parent.glob(f"{PREFIX}*-*"):
            pid = d.name[len(PREFIX) :].split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    d.rmdir()  # fails (and stays) while a process is still inside


def _kill_members(d: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (d / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), 9)
