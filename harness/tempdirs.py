"""Host temp directories that say whether their creator still runs: each is flock'ed by it.

The kernel drops a flock when its holder dies, SIGKILL included, so a directory that can be
locked has no live owner, however its pid was reused. `harness sandbox prune` removes those.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

# Where harness makes temp directories, by prefix (a mkdtemp suffix follows each).
TEMP_PREFIXES = (
    "harness-docker-",
    "harness-bwrap-",
    "harness-local-",
    "harness-base-",
    "harness-bot-index-",
)
CACHE_TEMP_PREFIX = ".tmp-"  # half-made entries of cache dirs (checkouts, clones ...)
CACHE_TEMP_PARENTS = ("checkouts", "snapshots", "clones", "github/*")
_SUFFIX = r"[A-Za-z0-9_]{8}"  # what tempfile.mkdtemp appends

_held: dict[str, int] = {}  # path -> the locked directory's fd, for this process's lifetime
_held_lock = threading.Lock()


def hold_tempdir(prefix: str, dir: Path | None = None) -> Path:
    """`mkdtemp`, locked by this process until `drop_tempdir` / `release_tempdir` (or death)."""
    for _ in range(100):
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A prune may have locked and removed it between mkdtemp and our lock: then retry.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            with _held_lock:
                _held[str(path)] = fd
            return path
        os.close(fd)
    raise OSError(f"could not create a temp directory with prefix {prefix!r}")


def release_tempdir(path: Path) -> None:
    """Unlock `path` (it was renamed into place, or is removed by the caller)."""
    with _held_lock:
        fd = _held.pop(str(path), None)
    if fd is not None:
        os.close(fd)


def drop_tempdir(path: Path) -> None:
    """Remove `path` and its lock."""
    shutil.rmtree(path, ignore_errors=True)
    release_tempdir(path)


@contextlib.contextmanager
def held_tempdir(prefix: str, dir: Path | None = None) -> Iterator[Path]:
    """A locked temp directory for the block, like `tempfile.TemporaryDirectory`."""
    path = hold_tempdir(prefix, dir)
    try:
        yield path
    finally:
        drop_tempdir(path)


def temp_roots(cache_dir: Path, tmp_dirs: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every (directory, prefix) where harness leaves temp directories."""
    roots = [(Path(d), p) for d in tmp_dirs for p in TEMP_PREFIXES]
    for parent in CACHE_TEMP_PARENTS:
        roots += [(d, CACHE_TEMP_PREFIX) for d in sorted(cache_dir.glob(parent)) if d.is_dir()]
    return roots


def prune_tempdirs(roots: Iterable[tuple[Path, str]]) -> list[Path]:
    """Remove our temp directories under `roots` that no live process holds; return them."""
    removed: list[Path] = []
    uid = os.geteuid()
    for root, prefix in roots:
        pattern = re.compile(re.escape(prefix) + _SUFFIX)
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for name in names:
            if pattern.fullmatch(name) and _remove_if_unheld(root / name, uid):
                removed.append(root / name)
    return removed


def _remove_if_unheld(path: Path, uid: int) -> bool:
    try:  # O_NOFOLLOW: a symlink planted in a shared /tmp is never followed
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if info.st_uid != uid or not stat.S_ISDIR(info.st_mode):
            return False  # another user's, in a shared /tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its creator still runs
        shutil.rmtree(path, ignore_errors=True)  # under the lock: a late owner retries
        return not path.exists()
    finally:
        os.close(fd)
