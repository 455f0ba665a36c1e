"""A named lock that holds across coroutines of one process and across processes of a host.

Image builds and clones are keyed work that several workers (coroutines, or Ray worker
processes on one node) may want at once: the first does it, the others wait and reuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

# Per event loop: an asyncio.Lock binds to the loop it first waits on, and Ray workers run
# one loop per job in the same process.
_local: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def host_lock(directory: Path, name: str) -> AsyncIterator[None]:
    """Hold `directory/name.lock` exclusively (flock), serialising in-process waiters first
    so that they do not each park a worker thread on the file lock."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.lock"
    locks = _local.setdefault(asyncio.get_running_loop(), {})
    lock = locks.setdefault(str(path), asyncio.Lock())
    async with lock:
        with open(path, "w") as fh:
            await asyncio.to_thread(fcntl.flock, fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
