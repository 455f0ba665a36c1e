"""Who owns a sandbox resource, named so the name cannot be reused, and whether it still runs.

A pid alone is reused, and a hostname says nothing on an engine shared by several hosts or
containers. A process is named by (boot id, pid namespace, pid, start time): no other process
of any boot or namespace carries the same four. Whoever shares the owner's kernel and pid
namespace can prove it alive or dead from /proc; anyone else gets "unknown".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Liveness = Literal["alive", "dead", "unknown"]
_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessId:
    boot_id: str
    pidns: str  # inode number of the pid namespace
    pid: int  # as seen in that namespace
    start: int  # start time, clock ticks after boot (field 22 of /proc/<pid>/stat)

    def __str__(self) -> str:
        return f"{self.boot_id}/{self.pidns}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        parts = text.split("/")
        if len(parts) != 4 or not all(parts) or not (parts[2].isdigit() and parts[3].isdigit()):
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


_current: ProcessId | None = None


def current_process() -> ProcessId | None:
    """This process's id, or None where /proc does not tell (then owners read "unknown")."""
    global _current
    if _current is None or _current.pid != os.getpid():  # recomputed in a forked child
        view = _view()
        stat = _stat(os.getpid()) if view is not None else None
        _current = None if view is None or stat is None else ProcessId(*view, os.getpid(), stat[1])
    return _current


def liveness(owner: ProcessId | None) -> Liveness:
    """ "alive" or "dead" when this process can see the owner's namespace, else "unknown"."""
    if owner is None or _view() != (owner.boot_id, owner.pidns):
        return "unknown"
    stat = _stat(owner.pid)
    if stat is None or stat[0] in ("Z", "X") or stat[1] != owner.start:
        return "dead"  # gone, a zombie, or the pid now names a younger process
    return "alive"


def _view() -> tuple[str, str] | None:
    """(boot id, pid namespace) of this process, when its /proc shows that namespace."""
    try:
        boot_id = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        ns = os.readlink(_PROC / "self/ns/pid")  # "pid:[4026531836]"
        shown = os.readlink(_PROC / "self")  # our pid as this /proc mount counts pids
    except OSError:
        return None
    if shown != str(os.getpid()) or not ns.startswith("pid:["):
        return None  # /proc belongs to another pid namespace: its pids are not ours
    return boot_id, ns[5:-1]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, or None when there is none with that pid."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None
